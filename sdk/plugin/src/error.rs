use std::fmt;

/// Why a codec could not decode or encode a message.
///
/// The host shows `offset` and `field` to the vendor next to the raw payload, so set them
/// whenever the failure can be pinned to a byte or an identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    pub message: String,
    /// Byte offset in the input that could not be decoded.
    pub offset: Option<u32>,
    /// The field or thing-model identifier being decoded or encoded.
    pub field: Option<String>,
}

impl CodecError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            offset: None,
            field: None,
        }
    }

    /// Pins the error to a byte of the input.
    pub fn at(mut self, offset: usize) -> Self {
        self.offset = Some(u32::try_from(offset).unwrap_or(u32::MAX));
        self
    }

    /// Names the frame field or thing-model identifier that failed.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.field, self.offset) {
            (Some(field), Some(offset)) => write!(f, "{field} at byte {offset}: ")?,
            (Some(field), None) => write!(f, "{field}: ")?,
            (None, Some(offset)) => write!(f, "at byte {offset}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for CodecError {}

#[cfg(feature = "codec")]
impl From<CodecError> for crate::bindings::codec::CodecError {
    fn from(e: CodecError) -> Self {
        Self {
            message: e.message,
            offset: e.offset,
            field: e.field,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_field_and_offset() {
        let e = CodecError::new("bad CRC").at(17).field("crc");
        assert_eq!(e.to_string(), "crc at byte 17: bad CRC");
        assert_eq!(CodecError::new("x").to_string(), "x");
    }
}
