//! Panics in `decode` (a trap in the host); `encode` works, so the host must not reuse the
//! instance that trapped.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "codec" });

struct PanicCodec;

impl Guest for PanicCodec {
    fn decode(
        _topic: String,
        payload: Vec<u8>,
        _context: MessageContext,
    ) -> Result<String, CodecError> {
        panic!("codec bug: cannot handle a {}-byte frame", payload.len());
    }

    fn encode(_message: String, _context: MessageContext) -> Result<Vec<u8>, CodecError> {
        Ok(vec![0x02])
    }
}

export!(PanicCodec);
