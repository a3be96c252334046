//! Lotus codec that remaps a vendor's JSON payload to thing-model properties; see README.md.

mod path;
mod remap;
#[cfg(test)]
mod tests;

use lotus_plugin_sdk::host::kv;
use lotus_plugin_sdk::types::MessageContext;
use lotus_plugin_sdk::{AlinkMessage, CodecError, Downlink, export_codec};

use remap::Mapping;

pub struct JsonRemap;

const MAPPING_KEY: &str = "mapping";

fn mapping() -> Result<Mapping, CodecError> {
    match kv::get_string(MAPPING_KEY) {
        Ok(Some(text)) => Mapping::parse(&text),
        Ok(None) => Ok(Mapping::default()),
        Err(e) => Err(CodecError::new(format!(
            "cannot read kv `mapping`: {err}",
            err = e.describe()
        ))
        .field(MAPPING_KEY)),
    }
}

impl lotus_plugin_sdk::Codec for JsonRemap {
    fn decode(
        _topic: &str,
        payload: &[u8],
        context: &MessageContext,
    ) -> Result<AlinkMessage, CodecError> {
        Ok(remap::decode(payload, &mapping()?, context.at_ms.to_string())?.into())
    }

    fn encode(message: &Downlink, _context: &MessageContext) -> Result<Vec<u8>, CodecError> {
        remap::encode(message, &mapping()?)
    }
}

export_codec!(JsonRemap);
