//! Hex text, as vendors paste frames into tickets and logs.

use crate::CodecError;

/// Lower-case hex without separators.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0F)]));
    }
    out
}

/// Parses hex, ignoring spaces, `:` and `-` between bytes and an optional `0x` prefix, so
/// `"68 01 0a"`, `"68:01:0A"` and `"0x68010a"` all work. The error offset is the character
/// position in the text.
pub fn decode(text: &str) -> Result<Vec<u8>, CodecError> {
    let body = text.strip_prefix("0x").unwrap_or(text);
    let skipped = text.len() - body.len();
    let mut out = Vec::with_capacity(body.len() / 2);
    let mut high: Option<u8> = None;
    for (i, c) in body.char_indices() {
        if matches!(c, ' ' | ':' | '-' | '\n' | '\t') && high.is_none() {
            continue;
        }
        let Some(nibble) = c.to_digit(16) else {
            return Err(CodecError::new(format!("'{c}' is not a hex digit")).at(skipped + i));
        };
        let nibble = nibble as u8;
        match high.take() {
            None => high = Some(nibble),
            Some(h) => out.push(h << 4 | nibble),
        }
    }
    if high.is_some() {
        return Err(CodecError::new("odd number of hex digits").at(text.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_separators() {
        assert_eq!(encode(&[0x68, 0x01, 0xAB]), "6801ab");
        assert_eq!(decode("68 01 AB").unwrap(), [0x68, 0x01, 0xAB]);
        assert_eq!(decode("0x68:01").unwrap(), [0x68, 0x01]);
        assert!(decode("").unwrap().is_empty());
    }

    #[test]
    fn errors_point_at_the_character() {
        let e = decode("68 0g").unwrap_err();
        assert_eq!(e.offset, Some(4));
        assert_eq!(
            decode("681").unwrap_err().message,
            "odd number of hex digits"
        );
    }
}
