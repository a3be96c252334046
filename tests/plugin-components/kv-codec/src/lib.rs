//! Uses the `kv` capability in `decode`: counts frames per device. Without a grant the host
//! answers `denied`, which this codec reports as its own error so a test can read the reason.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "codec" });

use lotus::plugin::kv;
use lotus::plugin::types::HostError;

struct KvCodec;

fn host_error(error: HostError) -> CodecError {
    let message = match error {
        HostError::Denied(m) => format!("denied: {m}"),
        HostError::NotFound(m) => format!("not-found: {m}"),
        HostError::Invalid(m) => format!("invalid: {m}"),
        HostError::Unavailable(m) => format!("unavailable: {m}"),
        HostError::Limit(m) => format!("limit: {m}"),
    };
    CodecError {
        message,
        offset: None,
        field: Some("kv".to_string()),
    }
}

impl Guest for KvCodec {
    fn decode(
        _topic: String,
        _payload: Vec<u8>,
        context: MessageContext,
    ) -> Result<String, CodecError> {
        let key = format!("count/{}/{}", context.product_key, context.device_name);
        let previous = kv::get(&key).map_err(host_error)?;
        let count = previous
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
            .map(u64::from_le_bytes)
            .unwrap_or(0)
            + 1;
        kv::set(&key, &count.to_le_bytes()).map_err(host_error)?;
        Ok(format!(
            r#"{{"id":"{count}","version":"1.0","method":"thing.event.property.post","params":{{"frames":{count}}}}}"#
        ))
    }

    fn encode(_message: String, _context: MessageContext) -> Result<Vec<u8>, CodecError> {
        Ok(Vec::new())
    }
}

export!(KvCodec);
