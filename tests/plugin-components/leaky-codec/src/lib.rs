//! Leaks 1 MiB on every decode and answers normally: the way a guest whose memory only grows
//! (a garbage-collected heap, a fragmenting allocator) behaves over many calls.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "codec" });

struct LeakyCodec;

impl Guest for LeakyCodec {
    fn decode(
        _topic: String,
        payload: Vec<u8>,
        _context: MessageContext,
    ) -> Result<String, CodecError> {
        // Touched, so the pages are really in use.
        let leaked: &'static mut [u8] = vec![0x5A; 1 << 20].leak();
        core::hint::black_box(&leaked);
        Ok(format!(
            r#"{{"id":"1","version":"1.0","method":"thing.event.property.post","params":{{"bytes":{}}}}}"#,
            payload.len()
        ))
    }

    fn encode(_message: String, _context: MessageContext) -> Result<Vec<u8>, CodecError> {
        Ok(Vec::new())
    }
}

export!(LeakyCodec);
