//! Writes to stdout and stderr in `decode`, the way a codec under development does: the host
//! must put those lines into the plugin log once per call, and cut a flood.
//!
//! Frame: `[0x01]` prints one line to each stream and a partial line to stdout; `[0x02]` floods
//! both streams with 1 MiB each (stdout in one newline-free write, stderr as 64-byte lines).
//! Either way the call then succeeds, so the host keeps the instance for the next call.
wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "codec" });

use std::io::Write;

struct ChattyCodec;

const FLOOD_BYTES: usize = 1 << 20;

impl Guest for ChattyCodec {
    fn decode(
        topic: String,
        payload: Vec<u8>,
        _context: MessageContext,
    ) -> Result<String, CodecError> {
        match payload.first() {
            Some(0x01) => {
                println!("decoding {} bytes from {topic}", payload.len());
                eprintln!("frame {payload:02x?} has no checksum");
                print!("partial line without newline");
                // Rust's stdout is line-buffered inside the guest; flush so the partial line
                // reaches the host during this call.
                std::io::stdout().flush().map_err(|e| CodecError {
                    message: format!("flush stdout: {e}"),
                    offset: None,
                    field: None,
                })?;
            }
            Some(0x02) => {
                let blob = vec![b'y'; FLOOD_BYTES];
                std::io::stdout()
                    .write_all(&blob)
                    .and_then(|()| std::io::stdout().flush())
                    .map_err(|e| CodecError {
                        message: format!("flood stdout: {e}"),
                        offset: None,
                        field: None,
                    })?;
                let line = "z".repeat(63);
                for _ in 0..FLOOD_BYTES / 64 {
                    eprintln!("{line}");
                }
            }
            _ => {
                return Err(CodecError {
                    message: "frame type must be 0x01 or 0x02".to_string(),
                    offset: Some(0),
                    field: Some("frame-type".to_string()),
                });
            }
        }
        Ok(format!(
            r#"{{"method":"thing.event.property.post","params":{{"bytes":{}}}}}"#,
            payload.len()
        ))
    }

    fn encode(_message: String, _context: MessageContext) -> Result<Vec<u8>, CodecError> {
        Ok(Vec::new())
    }
}

export!(ChattyCodec);
