//! The MQTT topic filter of a statement's FROM clause.

/// One level of a topic filter, split at parse time so that matching does not allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(Box<str>),
    /// `+`: exactly one level, which may be empty.
    Single,
    /// `#`: the rest of the topic, including none at all.
    Multi,
}

/// A validated MQTT topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicFilter {
    text: Box<str>,
    levels: Vec<Level>,
}

/// Why a topic filter is invalid, and where (0-based character offset into the filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilterError {
    pub offset: usize,
    pub message: String,
}

impl TopicFilter {
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        if text.is_empty() {
            return Err(FilterError {
                offset: 0,
                message: "the topic filter must not be empty (use '#' for every topic)".into(),
            });
        }
        let mut levels = Vec::new();
        let mut offset = 0;
        let count = text.split('/').count();
        for (index, level) in text.split('/').enumerate() {
            let bad = |message: String| FilterError { offset, message };
            if let Some(pos) = level.find('\0') {
                return Err(FilterError {
                    offset: offset + level[..pos].chars().count(),
                    message: "the topic filter must not contain a NUL character".into(),
                });
            }
            levels.push(match level {
                "+" => Level::Single,
                "#" if index + 1 == count => Level::Multi,
                "#" => {
                    return Err(bad(
                        "'#' must be the last level of the topic filter, e.g. '/sys/pk/#'".into(),
                    ));
                }
                _ if level.contains('#') || level.contains('+') => {
                    return Err(bad(format!(
                        "wildcards '+' and '#' must occupy a whole level, not part of '{level}'"
                    )));
                }
                _ => Level::Exact(level.into()),
            });
            offset += level.chars().count() + 1;
        }
        Ok(TopicFilter {
            text: text.into(),
            levels,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// MQTT matching: `+` matches one level, `#` the remaining levels including the parent
    /// (`a/#` matches `a`), and a wildcard in the first level does not match topics starting
    /// with `$` (those are reserved for the broker).
    pub fn matches(&self, topic: &str) -> bool {
        let mut parts = topic.split('/');
        for (index, level) in self.levels.iter().enumerate() {
            match level {
                Level::Multi => return !(index == 0 && topic.starts_with('$')),
                Level::Single => match parts.next() {
                    Some(part) if !(index == 0 && part.starts_with('$')) => {}
                    _ => return false,
                },
                Level::Exact(expected) => {
                    if parts.next() != Some(expected.as_ref()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}
