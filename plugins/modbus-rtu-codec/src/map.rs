//! The register map an operator stores in kv under `registers`.

use lotus_plugin_sdk::CodecError;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterType {
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl RegisterType {
    pub fn words(self) -> u16 {
        match self {
            Self::U16 | Self::I16 => 1,
            Self::U32 | Self::I32 | Self::F32 => 2,
        }
    }
}

/// How a 32-bit value is split over two registers. Bytes inside a register are always
/// big-endian (the Modbus standard); vendors disagree only on which register comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    /// High word first (`AB CD`), Modbus' own convention.
    #[default]
    Big,
    /// Low word first (`CD AB`), common in energy meters.
    Little,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Register {
    /// The thing-model property identifier.
    pub identifier: String,
    /// Register address (0-based, as on the wire).
    pub address: u16,
    #[serde(rename = "type")]
    pub kind: RegisterType,
    /// Property value = raw × scale; writes divide by it.
    pub scale: Option<f64>,
    /// Overrides the map's word order for this register.
    pub word_order: Option<WordOrder>,
    /// Only writable registers are accepted in property sets.
    #[serde(default)]
    pub writable: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegisterMap {
    /// The slave address responses must come from and writes go to.
    #[serde(default = "default_slave")]
    pub slave: u8,
    /// The first register the gateway polls, i.e. the one the response's data starts with.
    #[serde(default)]
    pub start: u16,
    /// The read function used for property reads: 3 (holding) or 4 (input registers).
    #[serde(default = "default_read_function")]
    pub read_function: u8,
    #[serde(default)]
    pub word_order: WordOrder,
    pub registers: Vec<Register>,
}

fn default_slave() -> u8 {
    1
}

fn default_read_function() -> u8 {
    3
}

impl RegisterMap {
    /// Parses the kv value; a bare array is a map with the defaults (slave 1, start 0, big-endian words).
    pub fn parse(text: &str) -> Result<Self, CodecError> {
        let trimmed = text.trim_start();
        let map: RegisterMap = if trimmed.starts_with('[') {
            let registers =
                lotus_plugin_sdk::serde_json::from_str(text).map_err(|e| config_error(&e))?;
            RegisterMap {
                slave: default_slave(),
                start: 0,
                read_function: default_read_function(),
                word_order: WordOrder::default(),
                registers,
            }
        } else {
            lotus_plugin_sdk::serde_json::from_str(text).map_err(|e| config_error(&e))?
        };
        if !matches!(map.read_function, 3 | 4) {
            return Err(
                CodecError::new(format!("is {}; use 3 or 4", map.read_function))
                    .field("registers.readFunction"),
            );
        }
        for (i, r) in map.registers.iter().enumerate() {
            if r.scale == Some(0.0) || r.scale.is_some_and(|s| !s.is_finite()) {
                return Err(CodecError::new("scale must be a non-zero number")
                    .field(format!("registers[{i}].scale")));
            }
            if map.registers[..i]
                .iter()
                .any(|other| other.identifier == r.identifier)
            {
                return Err(CodecError::new(format!("{} is mapped twice", r.identifier))
                    .field(format!("registers[{i}].identifier")));
            }
        }
        Ok(map)
    }

    pub fn register(&self, identifier: &str) -> Option<&Register> {
        self.registers.iter().find(|r| r.identifier == identifier)
    }

    pub fn word_order(&self, register: &Register) -> WordOrder {
        register.word_order.unwrap_or(self.word_order)
    }
}

fn config_error(e: &lotus_plugin_sdk::serde_json::Error) -> CodecError {
    CodecError::new(format!(
        "kv `registers` is not a register map (line {}, column {}): {e}",
        e.line(),
        e.column()
    ))
    .field("registers")
}
