//! Returns far more than any sane message: the output size limit must refuse it.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "codec" });

struct HugeOutputCodec;

impl Guest for HugeOutputCodec {
    fn decode(
        _topic: String,
        _payload: Vec<u8>,
        _context: MessageContext,
    ) -> Result<String, CodecError> {
        let filler = "x".repeat(8 << 20);
        Ok(format!(
            r#"{{"id":"1","version":"1.0","method":"thing.event.property.post","params":{{"blob":"{filler}"}}}}"#
        ))
    }

    fn encode(_message: String, _context: MessageContext) -> Result<Vec<u8>, CodecError> {
        Ok(vec![0u8; 8 << 20])
    }
}

export!(HugeOutputCodec);
