//! Recurses without bound: the wasm stack limit must stop it.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "codec" });

struct RecursionCodec;

#[inline(never)]
fn descend(depth: u64) -> u64 {
    // Unreachable in practice (the stack runs out first), but gives the recursion an exit so
    // the compiler keeps the calls as written.
    if depth == u64::MAX {
        return 0;
    }
    // Not a tail call: the addition happens after the recursive call returns.
    core::hint::black_box(descend(core::hint::black_box(depth + 1))).wrapping_add(depth)
}

impl Guest for RecursionCodec {
    fn decode(
        _topic: String,
        payload: Vec<u8>,
        _context: MessageContext,
    ) -> Result<String, CodecError> {
        Ok(descend(payload.len() as u64).to_string())
    }

    fn encode(_message: String, _context: MessageContext) -> Result<Vec<u8>, CodecError> {
        Ok(Vec::new())
    }
}

export!(RecursionCodec);
