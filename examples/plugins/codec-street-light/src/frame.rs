//! The SL-200 frame (README.md): pure functions, tested natively.

use lotus_plugin_sdk::alink::{PROPERTY_SET, fixed_point};
use lotus_plugin_sdk::{
    AlinkMessage, AlinkReply, AlinkRequest, ByteReader, CodecError, Downlink, ParamsExt, crc,
};

pub const START: u8 = 0xA5;
pub const TYPE_STATUS: u8 = 0x01;
pub const TYPE_FAULT: u8 = 0x02;
pub const TYPE_ACK: u8 = 0x03;
pub const TYPE_SET: u8 = 0x10;

#[derive(Debug, Clone, PartialEq)]
pub enum Uplink {
    Status(AlinkRequest),
    Fault(AlinkRequest),
    /// The sequence number of the command acknowledged, and whether it succeeded.
    Ack {
        sequence: u16,
        ok: bool,
    },
}

pub fn parse(bytes: &[u8]) -> Result<Uplink, CodecError> {
    let mut r = ByteReader::new(bytes);
    r.expect_u8("start", START)?;
    let type_at = r.offset();
    let frame_type = r.u8("frame type")?;
    let sequence = r.u16_be("sequence")?;
    let length = usize::from(r.u8("length")?);
    let body_at = r.offset();
    r.bytes("body", length)?;
    // The CRC-8 covers type through body, not the start byte.
    let crc_at = r.offset();
    let expected = crc::crc8(&bytes[1..crc_at]);
    let got = r.u8("crc")?;
    if got != expected {
        return Err(CodecError::new(format!(
            "CRC-8 is {got:#04x}, bytes 1..{crc_at} give {expected:#04x}"
        ))
        .at(crc_at)
        .field("crc"));
    }
    r.finish()?;

    let mut b = ByteReader::new(&bytes[..crc_at]);
    b.bytes("header", body_at)?;
    let id = sequence.to_string();
    let uplink = match frame_type {
        TYPE_STATUS => Uplink::Status(
            AlinkRequest::property_post(id)
                .property("LightSwitch", b.u8("LightSwitch")?)
                .property("Brightness", b.u8("Brightness")?)
                .property("Voltage", fixed_point(b.u16_be("Voltage")?.into(), 1))
                .property("Current", fixed_point(b.u16_be("Current")?.into(), 2))
                .property("Power", fixed_point(b.u16_be("Power")?.into(), 1))
                .property("Energy", fixed_point(b.u32_be("Energy")?.into(), 2))
                .property("WorkMode", b.u8("WorkMode")?),
        ),
        TYPE_FAULT => Uplink::Fault(
            AlinkRequest::event_post(id, "LampFault").property("ErrorCode", b.u8("ErrorCode")?),
        ),
        TYPE_ACK => Uplink::Ack {
            sequence,
            ok: b.u8("result")? == 0,
        },
        other => {
            return Err(CodecError::new(format!("unknown frame type {other:#04x}"))
                .at(type_at)
                .field("frame type"));
        }
    };
    // Read through the CRC position: a body longer than its type defines is an error too.
    if b.offset() != crc_at {
        return Err(CodecError::new(format!(
            "body is {} byte(s) longer than its frame type defines",
            crc_at - b.offset()
        ))
        .at(b.offset())
        .field("body"));
    }
    Ok(uplink)
}

/// The Alink message for an uplink; `acked_id` is the Alink id an ack answers, if known.
pub fn to_alink(uplink: Uplink, acked_id: Option<String>) -> AlinkMessage {
    match uplink {
        Uplink::Status(post) | Uplink::Fault(post) => post.into(),
        Uplink::Ack { sequence, ok } => {
            let id = acked_id.unwrap_or_else(|| sequence.to_string());
            if ok {
                AlinkReply::success(id, PROPERTY_SET).into()
            } else {
                AlinkReply::failure(id, PROPERTY_SET, 500, "the controller rejected the command")
                    .into()
            }
        }
    }
}

/// Property set → a SET frame of tag/value pairs.
pub fn encode(message: &Downlink, sequence: u16) -> Result<Vec<u8>, CodecError> {
    let Downlink::PropertySet { params, .. } = message else {
        return Err(CodecError::new("the controller only takes property sets").field("method"));
    };
    let mut body = Vec::new();
    for identifier in params.keys() {
        let (tag, value, max) = match identifier.as_str() {
            "LightSwitch" => (0x01, params.boolean("LightSwitch")?.map(i64::from), 1),
            "Brightness" => (0x02, params.integer("Brightness")?, 100),
            "WorkMode" => (0x03, params.integer("WorkMode")?, 2),
            other => return Err(CodecError::new("not writable on this controller").field(other)),
        };
        let value = value.unwrap_or_default();
        if !(0..=max).contains(&value) {
            return Err(
                CodecError::new(format!("{value} is outside 0..={max}")).field(identifier.as_str())
            );
        }
        body.extend([tag, value as u8]);
    }
    let mut frame = vec![START, TYPE_SET];
    frame.extend(sequence.to_be_bytes());
    frame.push(body.len() as u8);
    frame.extend(body);
    frame.push(crc::crc8(&frame[1..]));
    Ok(frame)
}
