// The codec shared by good-codec and good-codec-v2; each crate sets CODEC_VERSION so an upgrade
// test can tell which version answered a call.
//
// Frame (uplink): [0x01][temperature i16 BE, tenths of °C][humidity u8, %]
// Frame (downlink): [0x02][report interval u16 BE, seconds]

wit_bindgen::generate!({
    path: "../../../wit/v0.1.0",
    world: "codec",
});

use lotus::plugin::log::{Level, log};

struct GoodCodec;

fn error(message: &str, offset: Option<u32>, field: Option<&str>) -> CodecError {
    CodecError {
        message: message.to_string(),
        offset,
        field: field.map(str::to_string),
    }
}

impl Guest for GoodCodec {
    fn decode(
        _topic: String,
        payload: Vec<u8>,
        _context: MessageContext,
    ) -> Result<String, CodecError> {
        match payload.first() {
            None => return Err(error("empty frame", Some(0), Some("frame-type"))),
            Some(0x01) => {}
            Some(other) => {
                return Err(error(
                    &format!("unknown frame type 0x{other:02x}"),
                    Some(0),
                    Some("frame-type"),
                ));
            }
        }
        if payload.len() < 3 {
            return Err(error(
                "frame ends inside temperature",
                Some(payload.len() as u32),
                Some("temperature"),
            ));
        }
        if payload.len() < 4 {
            return Err(error(
                "frame ends before humidity",
                Some(3),
                Some("humidity"),
            ));
        }
        let temperature = f64::from(i16::from_be_bytes([payload[1], payload[2]])) / 10.0;
        let humidity = payload[3];
        if humidity > 100 {
            log(Level::Warn, &format!("humidity {humidity} out of range"));
            return Err(error("humidity above 100 %", Some(3), Some("humidity")));
        }
        Ok(format!(
            r#"{{"id":"{CODEC_VERSION}","version":"1.0","method":"thing.event.property.post","params":{{"temperature":{temperature},"humidity":{humidity}}}}}"#
        ))
    }

    fn encode(message: String, _context: MessageContext) -> Result<Vec<u8>, CodecError> {
        let value: serde_json::Value = serde_json::from_str(&message)
            .map_err(|e| error(&format!("not JSON: {e}"), None, None))?;
        let interval = value
            .pointer("/params/interval")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| {
                error(
                    "params.interval missing or not a number",
                    None,
                    Some("interval"),
                )
            })?;
        let interval = u16::try_from(interval)
            .map_err(|_| error("interval above 65535", None, Some("interval")))?;
        let [hi, lo] = interval.to_be_bytes();
        Ok(vec![0x02, hi, lo])
    }
}

export!(GoodCodec);
