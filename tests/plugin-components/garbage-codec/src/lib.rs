//! Returns output of the wrong shape: the host must refuse it instead of passing it on.
//! payload[0] picks the kind of garbage.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "codec" });

struct GarbageCodec;

impl Guest for GarbageCodec {
    fn decode(
        _topic: String,
        payload: Vec<u8>,
        _context: MessageContext,
    ) -> Result<String, CodecError> {
        Ok(match payload.first() {
            // Not JSON at all.
            Some(0) | None => "temperature=21.5;humidity=40".to_string(),
            // JSON, but not an object.
            Some(1) => "[21.5, 40]".to_string(),
            // An object without a method.
            Some(2) => r#"{"id":"1","params":{"temperature":21.5}}"#.to_string(),
            // A method, but params is not an object.
            _ => r#"{"id":"1","version":"1.0","method":"thing.event.property.post","params":42}"#
                .to_string(),
        })
    }

    fn encode(_message: String, _context: MessageContext) -> Result<Vec<u8>, CodecError> {
        Ok(b"ok".to_vec())
    }
}

export!(GarbageCodec);
