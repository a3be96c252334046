//! Reading binary frames field by field, so that every failure names its byte and field.

use crate::CodecError;

/// A cursor over a frame. Every read names the field it reads; running out of bytes or a
/// failed check becomes a [`CodecError`] carrying that field and the offset it starts at.
///
/// ```
/// use lotus_plugin_sdk::ByteReader;
/// let mut r = ByteReader::new(&[0x68, 0x01, 0x00, 0x2A]);
/// r.expect_u8("start", 0x68)?;
/// assert_eq!(r.u8("version")?, 1);
/// assert_eq!(r.u16_be("flow")?, 42);
/// r.finish()?;
/// # Ok::<(), lotus_plugin_sdk::CodecError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ByteReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Offset of the next byte to be read.
    pub fn offset(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// The bytes read so far, e.g. to check a CRC over everything before it.
    pub fn consumed(&self) -> &'a [u8] {
        &self.data[..self.pos]
    }

    /// An error at the current offset for `field`.
    pub fn error(&self, field: &str, message: impl Into<String>) -> CodecError {
        CodecError::new(message).at(self.pos).field(field)
    }

    pub fn bytes(&mut self, field: &str, len: usize) -> Result<&'a [u8], CodecError> {
        if self.remaining() < len {
            return Err(self.error(
                field,
                format!(
                    "frame too short: {field} needs {len} byte(s), {} left",
                    self.remaining()
                ),
            ));
        }
        let out = &self.data[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    pub fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(field, N)?);
        Ok(out)
    }

    pub fn u8(&mut self, field: &str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn i8(&mut self, field: &str) -> Result<i8, CodecError> {
        Ok(i8::from_be_bytes(self.array(field)?))
    }

    pub fn u16_be(&mut self, field: &str) -> Result<u16, CodecError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub fn u16_le(&mut self, field: &str) -> Result<u16, CodecError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub fn i16_be(&mut self, field: &str) -> Result<i16, CodecError> {
        Ok(i16::from_be_bytes(self.array(field)?))
    }

    pub fn i16_le(&mut self, field: &str) -> Result<i16, CodecError> {
        Ok(i16::from_le_bytes(self.array(field)?))
    }

    pub fn u32_be(&mut self, field: &str) -> Result<u32, CodecError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub fn u32_le(&mut self, field: &str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub fn i32_be(&mut self, field: &str) -> Result<i32, CodecError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    pub fn f32_be(&mut self, field: &str) -> Result<f32, CodecError> {
        Ok(f32::from_be_bytes(self.array(field)?))
    }

    /// Reads one byte and fails, pointing at it, unless it is `expected`.
    pub fn expect_u8(&mut self, field: &str, expected: u8) -> Result<(), CodecError> {
        let at = self.pos;
        let got = self.u8(field)?;
        if got != expected {
            return Err(
                CodecError::new(format!("expected {expected:#04x}, got {got:#04x}"))
                    .at(at)
                    .field(field),
            );
        }
        Ok(())
    }

    /// Reads a CRC-16/MODBUS sent low byte first and checks it against everything read before.
    pub fn expect_crc16_modbus_le(&mut self, field: &str) -> Result<(), CodecError> {
        let at = self.pos;
        let computed = crate::crc::crc16_modbus(self.consumed());
        let got = self.u16_le(field)?;
        if got != computed {
            return Err(CodecError::new(format!(
                "CRC mismatch: frame carries {got:#06x}, bytes 0..{at} give {computed:#06x}"
            ))
            .at(at)
            .field(field));
        }
        Ok(())
    }

    /// Fails if bytes are left over, so trailing garbage is not silently ignored.
    pub fn finish(&self) -> Result<(), CodecError> {
        if self.remaining() != 0 {
            return Err(CodecError::new(format!(
                "{} unexpected byte(s) after the end of the frame",
                self.remaining()
            ))
            .at(self.pos));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_and_little_endian() {
        let data = [
            0x12, 0x34, 0x12, 0x34, 0xFF, 0xFE, 0x00, 0x00, 0x01, 0x00, 0x3F, 0x80, 0, 0,
        ];
        let mut r = ByteReader::new(&data);
        assert_eq!(r.u16_be("a").unwrap(), 0x1234);
        assert_eq!(r.u16_le("b").unwrap(), 0x3412);
        assert_eq!(r.i16_be("c").unwrap(), -2);
        assert_eq!(r.u32_be("d").unwrap(), 256);
        assert_eq!(r.f32_be("e").unwrap(), 1.0);
        r.finish().unwrap();
    }

    #[test]
    fn short_frame_names_field_and_offset() {
        let mut r = ByteReader::new(&[0x01, 0x02, 0x03]);
        r.u8("header").unwrap();
        let e = r.u32_be("cumulative flow").unwrap_err();
        assert_eq!(e.offset, Some(1));
        assert_eq!(e.field.as_deref(), Some("cumulative flow"));
        assert!(
            e.message.contains("needs 4 byte(s), 2 left"),
            "{}",
            e.message
        );
    }

    #[test]
    fn crc_check_points_at_the_crc() {
        let mut frame = vec![0x01, 0x03, 0x00, 0x00, 0x00, 0x0A];
        frame.extend(crate::crc::crc16_modbus(&frame).to_le_bytes());
        let mut r = ByteReader::new(&frame);
        r.bytes("body", 6).unwrap();
        r.expect_crc16_modbus_le("crc").unwrap();

        frame[2] = 0xFF;
        let mut r = ByteReader::new(&frame);
        r.bytes("body", 6).unwrap();
        let e = r.expect_crc16_modbus_le("crc").unwrap_err();
        assert_eq!((e.offset, e.field.as_deref()), (Some(6), Some("crc")));
    }

    #[test]
    fn unexpected_byte_and_trailing_bytes() {
        let mut r = ByteReader::new(&[0x67, 0x00]);
        let e = r.expect_u8("start", 0x68).unwrap_err();
        assert_eq!(e.offset, Some(0));
        assert_eq!(e.message, "expected 0x68, got 0x67");
        assert_eq!(r.finish().unwrap_err().offset, Some(1));
    }
}
