//! Products: the template every device of a kind shares.

use serde::{Deserialize, Serialize};

/// How a product's devices reach the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// Connects on its own.
    Direct,
    /// Connects on its own and carries sub-devices.
    Gateway,
    /// Reaches the platform through a gateway.
    Subdevice,
}

/// The payload format of a product's uplinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// Alink JSON: validated against the thing model directly.
    Alink,
    /// Raw bytes decoded by the product's codec plugin into Alink JSON first.
    Custom,
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Direct => "direct",
            NodeType::Gateway => "gateway",
            NodeType::Subdevice => "subdevice",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(NodeType::Direct),
            "gateway" => Some(NodeType::Gateway),
            "subdevice" => Some(NodeType::Subdevice),
            _ => None,
        }
    }
}

impl DataFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DataFormat::Alink => "alink",
            DataFormat::Custom => "custom",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "alink" => Some(DataFormat::Alink),
            "custom" => Some(DataFormat::Custom),
            _ => None,
        }
    }
}

/// Device names follow Alibaba's rule: 4–32 characters of letters, digits and `-_@.:`.
pub fn validate_device_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if !(4..=32).contains(&len) {
        return Err(format!(
            "deviceName must be 4 to 32 characters long (got {len})"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_@.:".contains(*c)))
    {
        return Err(format!(
            "deviceName may contain only letters, digits and - _ @ . : (found '{c}')"
        ));
    }
    Ok(())
}
