//! Problems found when checking event types and workflow definitions.
//!
//! Definitions are written by operators through the API; every problem names where it is (the
//! step, if any, and the field path inside it) and what to change, so the whole list can be shown
//! at once instead of one fix-and-retry round per mistake.

use std::fmt;

use serde::Serialize;

/// One problem in an event type or workflow definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationError {
    /// The step the problem is in, when it is inside a step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Path of the field, in the spelling of the JSON/YAML document (`deadlineSecs`,
    /// `next.branches[0].when.value`).
    pub field: String,
    /// What is wrong and what a valid value looks like.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some(step) => write!(f, "step `{step}`, `{}`: {}", self.field, self.message),
            None => write!(f, "`{}`: {}", self.field, self.message),
        }
    }
}

/// Every problem found in one document; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct ValidationErrors(pub Vec<ValidationError>);

impl ValidationErrors {
    /// Problems in field order of the document.
    pub fn iter(&self) -> impl Iterator<Item = &ValidationError> {
        self.0.iter()
    }

    /// Is there a problem at this field path (inside `step`, or outside any step for `None`)?
    pub fn has(&self, step: Option<&str>, field: &str) -> bool {
        self.0
            .iter()
            .any(|e| e.step.as_deref() == step && e.field == field)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects problems while walking a document.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<ValidationError>,
}

impl Problems {
    pub(crate) fn push(
        &mut self,
        step: Option<&str>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.list.push(ValidationError {
            step: step.map(str::to_owned),
            field: field.into(),
            message: message.into(),
        });
    }

    pub(crate) fn into_result(self) -> Result<(), ValidationErrors> {
        if self.list.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(self.list))
        }
    }
}

/// Is `s` an identifier of the form `[a-z0-9_.-]{1,64}` (event type codes, definition ids)?
pub(crate) fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Describes the identifier format in error messages.
pub(crate) const CODE_FORMAT: &str =
    "1 to 64 characters of lowercase letters a-z, digits, '_', '.' and '-'";
