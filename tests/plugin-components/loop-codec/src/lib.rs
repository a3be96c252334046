//! Never returns from `decode`: the epoch deadline (or fuel) must stop it.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "codec" });

struct LoopCodec;

impl Guest for LoopCodec {
    fn decode(
        _topic: String,
        payload: Vec<u8>,
        _context: MessageContext,
    ) -> Result<String, CodecError> {
        // Depends on the input so the optimiser cannot prove the loop away.
        let mut state = payload.len() as u64;
        loop {
            state = core::hint::black_box(state.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }

    fn encode(_message: String, _context: MessageContext) -> Result<Vec<u8>, CodecError> {
        loop {
            core::hint::black_box(());
        }
    }
}

export!(LoopCodec);
