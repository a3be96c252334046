//! Allocates until the host refuses to grow memory.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "codec" });

struct MemoryBombCodec;

impl Guest for MemoryBombCodec {
    fn decode(
        _topic: String,
        _payload: Vec<u8>,
        _context: MessageContext,
    ) -> Result<String, CodecError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Touch every page so the allocation is real, not just reserved.
            hoard.push(vec![0xA5; 1 << 20]);
            core::hint::black_box(&hoard);
        }
    }

    fn encode(_message: String, _context: MessageContext) -> Result<Vec<u8>, CodecError> {
        Ok(Vec::new())
    }
}

export!(MemoryBombCodec);
