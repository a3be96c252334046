//! Modbus-RTU frames ↔ Alink, without host calls so it tests natively.

use lotus_plugin_sdk::alink::{PROPERTY_SET, scaled};
use lotus_plugin_sdk::serde_json::{Number, Value};
use lotus_plugin_sdk::{
    AlinkMessage, AlinkReply, AlinkRequest, ByteReader, CodecError, Downlink, crc,
};

use crate::map::{Register, RegisterMap, RegisterType, WordOrder};

pub const READ_HOLDING: u8 = 0x03;
pub const READ_INPUT: u8 = 0x04;
pub const WRITE_SINGLE: u8 = 0x06;
pub const WRITE_MULTIPLE: u8 = 0x10;

/// The standard exception codes (Modbus Application Protocol v1.1b3, section 7).
pub fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "ILLEGAL FUNCTION",
        0x02 => "ILLEGAL DATA ADDRESS",
        0x03 => "ILLEGAL DATA VALUE",
        0x04 => "SERVER DEVICE FAILURE",
        0x05 => "ACKNOWLEDGE",
        0x06 => "SERVER DEVICE BUSY",
        0x08 => "MEMORY PARITY ERROR",
        0x0A => "GATEWAY PATH UNAVAILABLE",
        0x0B => "GATEWAY TARGET DEVICE FAILED TO RESPOND",
        _ => "unknown exception",
    }
}

/// What a response frame says.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// Function 03/04: the registers read, starting at the map's `start`.
    Registers(Vec<u16>),
    /// Function 06/16: the device confirms a write.
    WriteConfirmed { function: u8, address: u16 },
}

/// Parses one response frame from `map.slave`; exceptions become errors naming the exception.
pub fn parse(bytes: &[u8], map: &RegisterMap) -> Result<Response, CodecError> {
    // The CRC covers everything before it; checking it first means a corrupted length or
    // function byte is reported as corruption rather than as a protocol violation.
    if bytes.len() < 4 {
        return Err(CodecError::new(format!(
            "{} byte(s) cannot be a Modbus-RTU frame (at least 4)",
            bytes.len()
        ))
        .at(bytes.len())
        .field("frame"));
    }
    let body_len = bytes.len() - 2;
    let mut crc_reader = ByteReader::new(bytes);
    crc_reader.bytes("frame", body_len)?;
    crc_reader.expect_crc16_modbus_le("crc")?;

    let mut r = ByteReader::new(&bytes[..body_len]);
    let slave = r.u8("slave address")?;
    if slave != map.slave {
        return Err(CodecError::new(format!(
            "response from slave {slave}, the register map polls slave {}",
            map.slave
        ))
        .at(0)
        .field("slave address"));
    }
    let function_at = r.offset();
    let function = r.u8("function")?;
    let response = match function {
        READ_HOLDING | READ_INPUT => {
            let count_at = r.offset();
            let count = usize::from(r.u8("byte count")?);
            if count % 2 != 0 {
                return Err(
                    CodecError::new(format!("{count} is odd; registers are 2 bytes each"))
                        .at(count_at)
                        .field("byte count"),
                );
            }
            let mut registers = Vec::with_capacity(count / 2);
            for _ in 0..count / 2 {
                registers.push(r.u16_be("register data")?);
            }
            Response::Registers(registers)
        }
        WRITE_SINGLE | WRITE_MULTIPLE => {
            let address = r.u16_be("register address")?;
            // 06 echoes the value, 16 the quantity; neither changes what the reply says.
            r.u16_be(if function == WRITE_SINGLE {
                "register value"
            } else {
                "quantity"
            })?;
            Response::WriteConfirmed { function, address }
        }
        f if f & 0x80 != 0 => {
            let code_at = r.offset();
            let code = r.u8("exception code")?;
            return Err(CodecError::new(format!(
                "Modbus exception {code:#04x} {} to function {:#04x}",
                exception_name(code),
                f & 0x7F
            ))
            .at(code_at)
            .field("exception code"));
        }
        other => {
            return Err(CodecError::new(format!(
                "function {other:#04x} is not a response this codec reads (03, 04, 06, 16)"
            ))
            .at(function_at)
            .field("function"));
        }
    };
    r.finish()?;
    Ok(response)
}

/// The property post for the registers of a read response.
pub fn properties(
    registers: &[u16],
    map: &RegisterMap,
    id: String,
) -> Result<AlinkRequest, CodecError> {
    let mut post = AlinkRequest::property_post(id);
    for register in &map.registers {
        let Some(first) = register.address.checked_sub(map.start).map(usize::from) else {
            continue;
        };
        let words = usize::from(register.kind.words());
        // A gateway may poll only part of the map; registers outside the response are absent.
        let Some(raw) = registers.get(first..first + words) else {
            continue;
        };
        post.insert(
            register.identifier.clone(),
            value(raw, register, map.word_order(register), 3 + 2 * first)?,
        );
    }
    if post.is_empty() {
        return Err(CodecError::new(format!(
            "the {} register(s) from {} hold none of the mapped registers",
            registers.len(),
            map.start
        ))
        .at(3)
        .field("register data"));
    }
    Ok(post)
}

fn value(
    raw: &[u16],
    register: &Register,
    order: WordOrder,
    offset: usize,
) -> Result<Value, CodecError> {
    let bits32 = || match order {
        WordOrder::Big => u32::from(raw[0]) << 16 | u32::from(raw[1]),
        WordOrder::Little => u32::from(raw[1]) << 16 | u32::from(raw[0]),
    };
    let number = match register.kind {
        RegisterType::U16 => f64::from(raw[0]),
        RegisterType::I16 => f64::from(raw[0] as i16),
        RegisterType::U32 => f64::from(bits32()),
        RegisterType::I32 => f64::from(bits32() as i32),
        RegisterType::F32 => f64::from(f32::from_bits(bits32())),
    };
    if !number.is_finite() {
        return Err(
            CodecError::new("the register holds NaN or infinity, which a property cannot")
                .at(offset)
                .field(register.identifier.as_str()),
        );
    }
    let value = match register.scale {
        Some(scale) => scaled(number, scale),
        None => number,
    };
    // Integers stay JSON integers so `int` properties validate.
    if register.kind != RegisterType::F32 && value.fract() == 0.0 {
        return Ok(Value::from(value as i64));
    }
    Ok(Number::from_f64(value)
        .map(Value::Number)
        .unwrap_or(Value::Null))
}

/// The Alink message for a parsed response.
pub fn to_alink(
    response: &Response,
    map: &RegisterMap,
    id: String,
) -> Result<AlinkMessage, CodecError> {
    Ok(match response {
        Response::Registers(registers) => properties(registers, map, id)?.into(),
        Response::WriteConfirmed { .. } => AlinkReply::success(id, PROPERTY_SET).into(),
    })
}

/// The frame for a downlink: a write for a property set, a read for a property get.
pub fn encode(message: &Downlink, map: &RegisterMap) -> Result<Vec<u8>, CodecError> {
    match message {
        Downlink::PropertySet { params, .. } => {
            let mut writes: Vec<(&Register, Vec<u16>)> = Vec::with_capacity(params.len());
            for (identifier, value) in params {
                let register = map.register(identifier).ok_or_else(|| {
                    CodecError::new("not in the register map").field(identifier.as_str())
                })?;
                if !register.writable {
                    return Err(
                        CodecError::new("the register map does not mark it writable")
                            .field(identifier.as_str()),
                    );
                }
                writes.push((register, words(value, register, map.word_order(register))?));
            }
            writes.sort_by_key(|(r, _)| r.address);
            let Some((first, _)) = writes.first() else {
                return Err(CodecError::new("nothing to set").field("params"));
            };
            let mut data: Vec<u16> = Vec::new();
            let mut next = first.address;
            for (register, words) in &writes {
                // One request writes one contiguous block; a device handles one request at a time.
                if register.address != next {
                    return Err(CodecError::new(format!(
                        "register {} is not next to the others set (next free is {next}); set it in its own request",
                        register.address
                    ))
                    .field(register.identifier.as_str()));
                }
                next = register.address + register.kind.words();
                data.extend(words.iter());
            }
            Ok(if data.len() == 1 {
                frame(
                    map.slave,
                    WRITE_SINGLE,
                    &[first.address.to_be_bytes(), data[0].to_be_bytes()].concat(),
                )
            } else {
                let mut pdu = Vec::with_capacity(5 + data.len() * 2);
                pdu.extend(first.address.to_be_bytes());
                pdu.extend((data.len() as u16).to_be_bytes());
                pdu.push((data.len() * 2) as u8);
                pdu.extend(data.iter().flat_map(|w| w.to_be_bytes()));
                frame(map.slave, WRITE_MULTIPLE, &pdu)
            })
        }
        Downlink::PropertyGet { identifiers, .. } => {
            let mut low = u16::MAX;
            let mut high = 0u16;
            for identifier in identifiers {
                let register = map.register(identifier).ok_or_else(|| {
                    CodecError::new("not in the register map").field(identifier.as_str())
                })?;
                low = low.min(register.address);
                high = high.max(register.address + register.kind.words());
            }
            if identifiers.is_empty() {
                // An empty read asks for everything the map knows.
                low = map
                    .registers
                    .iter()
                    .map(|r| r.address)
                    .min()
                    .unwrap_or(map.start);
                high = map
                    .registers
                    .iter()
                    .map(|r| r.address + r.kind.words())
                    .max()
                    .unwrap_or(map.start);
            }
            if low != map.start {
                return Err(CodecError::new(format!(
                    "reads start at register {} (the map's `start`) so responses can be decoded; {low} was asked",
                    map.start
                ))
                .field("params"));
            }
            let quantity = high - low;
            Ok(frame(
                map.slave,
                map.read_function,
                &[low.to_be_bytes(), quantity.to_be_bytes()].concat(),
            ))
        }
        Downlink::ServiceCall { identifier, .. } => Err(CodecError::new(
            "Modbus register maps have properties only, no services",
        )
        .field(identifier.as_str())),
        Downlink::Reply { .. } | Downlink::Other { .. } => {
            Err(CodecError::new("Modbus slaves take reads and writes only").field("method"))
        }
    }
}

fn words(value: &Value, register: &Register, order: WordOrder) -> Result<Vec<u16>, CodecError> {
    let field = register.identifier.as_str();
    let number = value
        .as_f64()
        .or_else(|| value.as_bool().map(f64::from))
        .ok_or_else(|| CodecError::new(format!("{value} is not a number")).field(field))?;
    let raw = match register.scale {
        Some(scale) => (number / scale).round(),
        None => number,
    };
    let out_of_range = |min: f64, max: f64| {
        CodecError::new(format!(
            "{number} is outside what a {:?} register holds ({min}..={max} before scale)",
            register.kind
        ))
        .field(field)
    };
    let split = |bits: u32| {
        let (high, low) = ((bits >> 16) as u16, bits as u16);
        match order {
            WordOrder::Big => vec![high, low],
            WordOrder::Little => vec![low, high],
        }
    };
    let integer = |min: f64, max: f64| {
        if raw.fract() != 0.0 || raw < min || raw > max {
            Err(out_of_range(min, max))
        } else {
            Ok(raw)
        }
    };
    Ok(match register.kind {
        RegisterType::U16 => vec![integer(0.0, f64::from(u16::MAX))? as u16],
        RegisterType::I16 => vec![integer(f64::from(i16::MIN), f64::from(i16::MAX))? as i16 as u16],
        RegisterType::U32 => split(integer(0.0, f64::from(u32::MAX))? as u32),
        RegisterType::I32 => {
            split(integer(f64::from(i32::MIN), f64::from(i32::MAX))? as i32 as u32)
        }
        RegisterType::F32 => split((raw as f32).to_bits()),
    })
}

/// `slave`, `function`, `pdu`, then the CRC low byte first.
pub fn frame(slave: u8, function: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pdu.len() + 4);
    out.push(slave);
    out.push(function);
    out.extend(pdu);
    out.extend(crc::crc16_modbus(&out).to_le_bytes());
    out
}
