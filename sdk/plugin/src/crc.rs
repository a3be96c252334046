//! Checksums that device frames commonly carry.

/// CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF). Modbus and most meter frames send it
/// low byte first: use [`u16::to_le_bytes`].
pub fn crc16_modbus(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in data {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// CRC-8/SMBUS (poly 0x07, init 0x00, not reflected), the plain "CRC-8".
pub fn crc8(data: &[u8]) -> u8 {
    let mut crc: u8 = 0;
    for &byte in data {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// CRC-8/MAXIM (Dallas/1-Wire: poly 0x31 reflected, init 0x00), used by many sensor chips.
pub fn crc8_maxim(data: &[u8]) -> u8 {
    let mut crc: u8 = 0;
    for &byte in data {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8C
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The 8-bit sum of all bytes, modulo 256 (CJ/T 188 meter frames and many vendor protocols).
pub fn sum8(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |acc, &b| acc.wrapping_add(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Check values from the CRC RevEng catalogue, over the ASCII digits "123456789".
    const CHECK: &[u8] = b"123456789";

    #[test]
    fn catalogue_check_values() {
        assert_eq!(crc16_modbus(CHECK), 0x4B37);
        assert_eq!(crc8(CHECK), 0xF4);
        assert_eq!(crc8_maxim(CHECK), 0xA1);
        assert_eq!(sum8(&[0xFF, 0x02]), 0x01);
    }

    #[test]
    fn modbus_request_frame() {
        // Read 10 holding registers from slave 1 at 0: the well-known frame 01 03 00 00 00 0A C5 CD.
        let crc = crc16_modbus(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]);
        assert_eq!(crc.to_le_bytes(), [0xC5, 0xCD]);
    }
}
