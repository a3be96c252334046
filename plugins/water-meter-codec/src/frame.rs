//! The meter's frame layout (see README.md), without any host calls, so it tests natively.

use lotus_plugin_sdk::alink::{PROPERTY_SET, fixed_point};
use lotus_plugin_sdk::serde_json::Value;
use lotus_plugin_sdk::{
    AlinkMessage, AlinkReply, AlinkRequest, ByteReader, CodecError, Downlink, ParamsExt, crc,
};

pub const START: u8 = 0x68;
pub const END: u8 = 0x16;
pub const VERSION: u8 = 0x01;
/// Bytes before the payload: start, version, type, sequence (2), serial (7), length.
pub const HEADER_LEN: usize = 13;

pub const TYPE_DATA: u8 = 0x01;
pub const TYPE_ALARM: u8 = 0x02;
pub const TYPE_REPLY: u8 = 0x03;
pub const TYPE_COMMAND: u8 = 0x81;

pub const TAG_VALVE: u8 = 0x01;
pub const TAG_REPORT_INTERVAL: u8 = 0x02;

/// CJ/T 188 wildcard address: every meter accepts it, for devices whose name is not the serial.
pub const BROADCAST_SERIAL: [u8; 7] = [0xAA; 7];

/// Commands to the meter accept at most a day between reports; less than a minute drains the
/// battery within weeks.
pub const REPORT_INTERVAL_MINUTES: std::ops::RangeInclusive<i64> = 1..=1440;

#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub sequence: u16,
    /// The 14 BCD digits of the meter's serial.
    pub serial: String,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Data(Reading),
    Alarm {
        kind: Alarm,
        reading: AlarmReading,
    },
    /// The result byte of a command reply.
    Reply {
        result: u8,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// 0.001 m³.
    pub cumulative_litres: u32,
    /// 0.001 m³/h.
    pub instant_litres_per_hour: u16,
    pub battery_mv: u16,
    pub valve: u8,
    /// 0.1 °C.
    pub temperature_decidegrees: i16,
    pub status: u16,
    pub report_interval_minutes: u16,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlarmReading {
    pub status: u16,
    pub cumulative_litres: u32,
    pub instant_litres_per_hour: u16,
    pub battery_mv: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alarm {
    Leakage,
    LowBattery,
    ReverseFlow,
    Tamper,
    ValveFault,
    Burst,
}

impl Alarm {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x01 => Self::Leakage,
            0x02 => Self::LowBattery,
            0x03 => Self::ReverseFlow,
            0x04 => Self::Tamper,
            0x05 => Self::ValveFault,
            0x06 => Self::Burst,
            _ => return None,
        })
    }

    /// The thing-model event identifier.
    pub fn identifier(self) -> &'static str {
        match self {
            Self::Leakage => "Leakage",
            Self::LowBattery => "LowBattery",
            Self::ReverseFlow => "ReverseFlow",
            Self::Tamper => "Tamper",
            Self::ValveFault => "ValveFault",
            Self::Burst => "Burst",
        }
    }
}

/// Parses and checks a whole uplink frame.
pub fn parse(bytes: &[u8]) -> Result<Frame, CodecError> {
    let mut r = ByteReader::new(bytes);
    r.expect_u8("start", START)?;
    let version_at = r.offset();
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(CodecError::new(format!(
            "unsupported protocol version {version}, this codec reads {VERSION}"
        ))
        .at(version_at)
        .field("version"));
    }
    let type_at = r.offset();
    let frame_type = r.u8("frame type")?;
    let sequence = r.u16_be("sequence")?;
    let serial_at = r.offset();
    let serial = bcd_digits(r.bytes("serial", 7)?, serial_at)?;
    let length = usize::from(r.u8("payload length")?);
    let payload_at = r.offset();
    let payload = r.bytes("payload", length)?;
    r.expect_crc16_modbus_le("crc")?;
    r.expect_u8("end", END)?;
    r.finish()?;

    // Payload fields are read from a sub-reader, then shifted so offsets count from the frame start.
    let shift = |e: CodecError| CodecError {
        offset: e.offset.map(|o| o + payload_at as u32),
        ..e
    };
    let mut p = ByteReader::new(payload);
    let body = match frame_type {
        TYPE_DATA => {
            let reading = Reading {
                cumulative_litres: p.u32_be("cumulative flow").map_err(shift)?,
                instant_litres_per_hour: p.u16_be("instantaneous flow").map_err(shift)?,
                battery_mv: p.u16_be("battery voltage").map_err(shift)?,
                valve: p.u8("valve state").map_err(shift)?,
                temperature_decidegrees: p.i16_be("temperature").map_err(shift)?,
                status: p.u16_be("status bits").map_err(shift)?,
                report_interval_minutes: p.u16_be("reporting interval").map_err(shift)?,
            };
            Body::Data(reading)
        }
        TYPE_ALARM => {
            let code_at = p.offset();
            let code = p.u8("alarm code").map_err(shift)?;
            let kind = Alarm::from_code(code).ok_or_else(|| {
                CodecError::new(format!("unknown alarm code {code:#04x}"))
                    .at(payload_at + code_at)
                    .field("alarm code")
            })?;
            let reading = AlarmReading {
                status: p.u16_be("status bits").map_err(shift)?,
                cumulative_litres: p.u32_be("cumulative flow").map_err(shift)?,
                instant_litres_per_hour: p.u16_be("instantaneous flow").map_err(shift)?,
                battery_mv: p.u16_be("battery voltage").map_err(shift)?,
            };
            Body::Alarm { kind, reading }
        }
        TYPE_REPLY => Body::Reply {
            result: p.u8("result").map_err(shift)?,
        },
        other => {
            return Err(CodecError::new(format!(
                "frame type {other:#04x} is not an uplink (0x01 data, 0x02 alarm, 0x03 reply)"
            ))
            .at(type_at)
            .field("frame type"));
        }
    };
    // Newer firmware may append fields; a shorter payload than ours is an error, a longer one
    // is reported so the vendor notices the codec is behind.
    if p.remaining() != 0 {
        return Err(CodecError::new(format!(
            "payload has {} byte(s) more than protocol version {VERSION} defines",
            p.remaining()
        ))
        .at(payload_at + p.offset())
        .field("payload"));
    }
    Ok(Frame {
        sequence,
        serial,
        body,
    })
}

fn bcd_digits(bytes: &[u8], offset: usize) -> Result<String, CodecError> {
    let mut out = String::with_capacity(bytes.len() * 2);
    for (i, &b) in bytes.iter().enumerate() {
        for nibble in [b >> 4, b & 0x0F] {
            if nibble > 9 {
                return Err(CodecError::new(format!("{b:#04x} is not two BCD digits"))
                    .at(offset + i)
                    .field("serial"));
            }
            out.push(char::from(b'0' + nibble));
        }
    }
    Ok(out)
}

/// The meter's address for a command: the device name when it is the 14-digit serial.
pub fn serial_bytes(device_name: &str) -> [u8; 7] {
    let digits = device_name.as_bytes();
    if digits.len() != 14 || !digits.iter().all(u8::is_ascii_digit) {
        return BROADCAST_SERIAL;
    }
    let mut out = [0u8; 7];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = (pair[0] - b'0') << 4 | (pair[1] - b'0');
    }
    out
}

/// Which downlink a command sequence number belongs to, so its reply can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    pub method: String,
}

/// The Alink message for an uplink frame. `pending` is the downlink a reply answers, if known.
pub fn to_alink(frame: &Frame, pending: Option<Pending>) -> AlinkMessage {
    let id = frame.sequence.to_string();
    match &frame.body {
        Body::Data(r) => AlinkRequest::property_post(id)
            .property(
                "CumulativeFlow",
                fixed_point(i64::from(r.cumulative_litres), 3),
            )
            .property(
                "InstantFlow",
                fixed_point(i64::from(r.instant_litres_per_hour), 3),
            )
            .property("BatteryVoltage", fixed_point(i64::from(r.battery_mv), 3))
            .property("ValveState", r.valve)
            .property(
                "WaterTemperature",
                fixed_point(i64::from(r.temperature_decidegrees), 1),
            )
            .property("StatusBits", r.status)
            .property("ReportInterval", r.report_interval_minutes)
            .into(),
        Body::Alarm { kind, reading } => {
            let event = AlinkRequest::event_post(id, kind.identifier());
            let instant = fixed_point(i64::from(reading.instant_litres_per_hour), 3);
            match kind {
                Alarm::Leakage | Alarm::ReverseFlow | Alarm::Burst => {
                    event.property("InstantFlow", instant).property(
                        "CumulativeFlow",
                        fixed_point(i64::from(reading.cumulative_litres), 3),
                    )
                }
                Alarm::LowBattery => event.property(
                    "BatteryVoltage",
                    fixed_point(i64::from(reading.battery_mv), 3),
                ),
                Alarm::Tamper | Alarm::ValveFault => event.property("StatusBits", reading.status),
            }
            .into()
        }
        Body::Reply { result } => {
            // Without the pending entry (kv lost, reply to another platform's command) the
            // sequence number is the best id there is.
            let Pending { id, method } = pending.unwrap_or(Pending {
                id,
                method: PROPERTY_SET.to_owned(),
            });
            match result {
                0 => AlinkReply::success(id, method),
                1 => {
                    AlinkReply::failure(id, method, 500, "the meter could not execute the command")
                }
                2 => AlinkReply::failure(id, method, 501, "the meter does not support the command"),
                3 => AlinkReply::failure(
                    id,
                    method,
                    460,
                    "the meter refused a parameter as out of range",
                ),
                other => AlinkReply::failure(
                    id,
                    method,
                    500,
                    format!("the meter answered with unknown result {other}"),
                ),
            }
            .into()
        }
    }
}

/// The command sequence number for a downlink id: its low 16 bits, so consecutive platform ids
/// give consecutive sequence numbers.
pub fn sequence_for(id: &str) -> Result<u16, CodecError> {
    let n: u64 = id.parse().map_err(|_| {
        CodecError::new(format!("Alink id {id:?} is not a decimal number")).field("id")
    })?;
    Ok((n & 0xFFFF) as u16)
}

/// Builds the command frame for a property set or a `ControlValve` call.
pub fn command(message: &Downlink, sequence: u16, serial: [u8; 7]) -> Result<Vec<u8>, CodecError> {
    let mut tlvs = Vec::new();
    match message {
        Downlink::PropertySet { params, .. } => {
            for identifier in params.keys() {
                match identifier.as_str() {
                    "ValveState" => {
                        let state = params.integer("ValveState")?.unwrap_or_default();
                        if !(0..=1).contains(&state) {
                            return Err(CodecError::new(format!(
                                "{state} cannot be set: 0 closes, 1 opens"
                            ))
                            .field("ValveState"));
                        }
                        tlvs.extend([TAG_VALVE, 1, state as u8]);
                    }
                    "ReportInterval" => {
                        let minutes = params.integer("ReportInterval")?.unwrap_or_default();
                        if !REPORT_INTERVAL_MINUTES.contains(&minutes) {
                            return Err(CodecError::new(format!(
                                "{minutes} minutes is outside 1..=1440"
                            ))
                            .field("ReportInterval"));
                        }
                        tlvs.extend([TAG_REPORT_INTERVAL, 2]);
                        tlvs.extend((minutes as u16).to_be_bytes());
                    }
                    other => {
                        return Err(CodecError::new(
                            "the meter has no writable property of that name",
                        )
                        .field(other));
                    }
                }
            }
        }
        Downlink::ServiceCall {
            identifier, params, ..
        } if identifier == "ControlValve" => {
            let open = params
                .boolean("Open")?
                .ok_or_else(|| CodecError::new("missing; 1 opens, 0 closes").field("Open"))?;
            tlvs.extend([TAG_VALVE, 1, u8::from(open)]);
        }
        Downlink::ServiceCall { identifier, .. } => {
            return Err(CodecError::new("the meter has no such service").field(identifier.as_str()));
        }
        _ => {
            return Err(CodecError::new(
                "the meter takes property sets and ControlValve calls only; replies and reads are not sent to it",
            )
            .field("method"));
        }
    }
    if tlvs.is_empty() {
        return Err(CodecError::new("nothing to set").field("params"));
    }
    Ok(frame(TYPE_COMMAND, sequence, serial, &tlvs))
}

/// A complete frame around `payload`, with its CRC.
pub fn frame(frame_type: u8, sequence: u16, serial: [u8; 7], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + 3);
    out.extend([START, VERSION, frame_type]);
    out.extend(sequence.to_be_bytes());
    out.extend(serial);
    out.push(u8::try_from(payload.len()).expect("command payloads are a few TLVs"));
    out.extend(payload);
    out.extend(crc::crc16_modbus(&out).to_le_bytes());
    out.push(END);
    out
}

/// The method a downlink's reply will answer.
pub fn reply_method(message: &Downlink) -> String {
    match message {
        Downlink::ServiceCall { identifier, .. } => format!("thing.service.{identifier}"),
        _ => PROPERTY_SET.to_owned(),
    }
}

/// Pending entries are JSON so a later codec version can add fields.
pub fn pending_to_json(p: &Pending) -> String {
    lotus_plugin_sdk::serde_json::json!({ "id": p.id, "method": p.method }).to_string()
}

pub fn pending_from_json(text: &str) -> Option<Pending> {
    let v: Value = lotus_plugin_sdk::serde_json::from_str(text).ok()?;
    Some(Pending {
        id: v.get("id")?.as_str()?.to_owned(),
        method: v.get("method")?.as_str()?.to_owned(),
    })
}
