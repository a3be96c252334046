//! Lotus codec for an NB-IoT water meter's binary frames; the layout is in README.md.

mod frame;
#[cfg(test)]
mod tests;

use lotus_plugin_sdk::host::{kv, log};
use lotus_plugin_sdk::types::MessageContext;
use lotus_plugin_sdk::{AlinkMessage, CodecError, Downlink, export_codec};

use frame::{Body, Pending};

pub struct WaterMeterCodec;

/// Replies carry only the command's sequence number; this kv entry maps it back to the
/// downlink's Alink id and method. Keyed per device because sequence numbers repeat across meters.
fn pending_key(context: &MessageContext, sequence: u16) -> String {
    format!(
        "pending/{}/{}/{sequence}",
        context.product_key, context.device_name
    )
}

impl lotus_plugin_sdk::Codec for WaterMeterCodec {
    fn decode(
        _topic: &str,
        payload: &[u8],
        context: &MessageContext,
    ) -> Result<AlinkMessage, CodecError> {
        let frame = frame::parse(payload)?;
        let pending = match frame.body {
            Body::Reply { .. } => {
                let key = pending_key(context, frame.sequence);
                match kv::get_string(&key) {
                    Ok(entry) => {
                        // Each command is answered once; drop the entry so the key can be reused.
                        if entry.is_some()
                            && let Err(e) = kv::delete(&key)
                        {
                            log::warn(&format!(
                                "could not delete {key}: {err}",
                                err = e.describe()
                            ));
                        }
                        entry.as_deref().and_then(frame::pending_from_json)
                    }
                    Err(e) => {
                        log::warn(&format!(
                            "reply {}: pending command unknown: {err}",
                            frame.sequence,
                            err = e.describe()
                        ));
                        None
                    }
                }
            }
            _ => None,
        };
        Ok(frame::to_alink(&frame, pending))
    }

    fn encode(message: &Downlink, context: &MessageContext) -> Result<Vec<u8>, CodecError> {
        let sequence = frame::sequence_for(message.id())?;
        let bytes = frame::command(message, sequence, frame::serial_bytes(&context.device_name))?;
        let pending = Pending {
            id: message.id().to_owned(),
            method: frame::reply_method(message),
        };
        // Without the entry the reply still decodes, under the sequence number as its id.
        if let Err(e) = kv::set_string(
            &pending_key(context, sequence),
            &frame::pending_to_json(&pending),
        ) {
            log::warn(&format!(
                "command {sequence}: reply will not name its Alink id: {err}",
                err = e.describe()
            ));
        }
        Ok(bytes)
    }
}

export_codec!(WaterMeterCodec);
