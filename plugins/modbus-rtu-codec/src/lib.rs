//! Lotus codec for Modbus-RTU devices behind a transparent gateway; see README.md.

mod map;
mod rtu;
#[cfg(test)]
mod tests;

use lotus_plugin_sdk::host::{kv, log};
use lotus_plugin_sdk::types::MessageContext;
use lotus_plugin_sdk::{AlinkMessage, CodecError, Downlink, export_codec};

use map::RegisterMap;

pub struct ModbusRtuCodec;

const MAP_KEY: &str = "registers";

fn register_map() -> Result<RegisterMap, CodecError> {
    let text = kv::get_string(MAP_KEY)
        .map_err(|e| {
            CodecError::new(format!(
                "cannot read the register map: {err}",
                err = e.describe()
            ))
            .field(MAP_KEY)
        })?
        .ok_or_else(|| {
            CodecError::new("no register map: store one in the plugin's kv under `registers`")
                .field(MAP_KEY)
        })?;
    RegisterMap::parse(&text)
}

/// A Modbus master has one request outstanding per slave, so one entry per device suffices to
/// name the write a confirmation answers.
fn pending_key(context: &MessageContext) -> String {
    format!("pending/{}/{}", context.product_key, context.device_name)
}

impl lotus_plugin_sdk::Codec for ModbusRtuCodec {
    fn decode(
        _topic: &str,
        payload: &[u8],
        context: &MessageContext,
    ) -> Result<AlinkMessage, CodecError> {
        let map = register_map()?;
        let response = rtu::parse(payload, &map)?;
        let id = match response {
            rtu::Response::WriteConfirmed { .. } => {
                let key = pending_key(context);
                let id = kv::get_string(&key).ok().flatten();
                if id.is_some()
                    && let Err(e) = kv::delete(&key)
                {
                    log::warn(&format!(
                        "could not delete {key}: {err}",
                        err = e.describe()
                    ));
                }
                id.unwrap_or_else(|| context.at_ms.to_string())
            }
            // Read responses carry no id; the receive time is unique per device.
            rtu::Response::Registers(_) => context.at_ms.to_string(),
        };
        rtu::to_alink(&response, &map, id)
    }

    fn encode(message: &Downlink, context: &MessageContext) -> Result<Vec<u8>, CodecError> {
        let map = register_map()?;
        let frame = rtu::encode(message, &map)?;
        if matches!(message, Downlink::PropertySet { .. })
            && let Err(e) = kv::set_string(&pending_key(context), message.id())
        {
            log::warn(&format!(
                "write {}: its confirmation will not name the id: {err}",
                message.id(),
                err = e.describe()
            ));
        }
        Ok(frame)
    }
}

export_codec!(ModbusRtuCodec);
