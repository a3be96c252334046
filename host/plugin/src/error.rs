//! Why a plugin call or a `prepare` did not succeed.

use crate::manifest::World;

/// Why a call into a plugin returned no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The codec's own decode/encode error: the input was bad, the plugin is fine.
    #[error("codec error{}{}: {message}", offset.map(|o| format!(" at byte {o}")).unwrap_or_default(), field.as_ref().map(|f| format!(" in field {f:?}")).unwrap_or_default())]
    Codec {
        message: String,
        offset: Option<u32>,
        field: Option<String>,
    },
    /// A rule, handler, app or channel returned its own error (`result::err`): the plugin is fine.
    #[error("plugin error: {0}")]
    Plugin(String),
    #[error("the call ran past its time limit")]
    Timeout,
    #[error("the call used up its fuel (too much computation)")]
    OutOfFuel,
    #[error("the plugin hit its memory limit")]
    MemoryLimit,
    /// The guest trapped; when it reported a panic on stderr first (as Rust guests do), the
    /// message leads with it, e.g. `panicked at src/lib.rs:12:9: codec bug: … (wasm trap: …)`.
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin returned {bytes} bytes, above its limit of {limit}")]
    OutputTooLarge { bytes: usize, limit: usize },
    /// The result has the wrong shape, e.g. decode returned text that is not an Alink request.
    #[error("the plugin returned invalid output: {0}")]
    InvalidOutput(String),
    #[error("the plugin is suspended: {0}")]
    Suspended(String),
    #[error("the plugin call failed: {0}")]
    Failed(String),
}

impl CallError {
    /// A short stable code for dead letters and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            CallError::Codec { .. } => "codec_error",
            CallError::Plugin(_) => "plugin_error",
            CallError::Timeout => "timeout",
            CallError::OutOfFuel => "out_of_fuel",
            CallError::MemoryLimit => "memory_limit",
            CallError::Trap(_) => "trap",
            CallError::OutputTooLarge { .. } => "output_too_large",
            CallError::InvalidOutput(_) => "invalid_output",
            CallError::Suspended(_) => "suspended",
            CallError::Failed(_) => "failed",
        }
    }

    /// Whether this counts towards suspension: the plugin misbehaved, rather than answering
    /// with its own error or being refused before it ran.
    pub fn is_plugin_failure(&self) -> bool {
        !matches!(
            self,
            CallError::Codec { .. } | CallError::Plugin(_) | CallError::Suspended(_)
        )
    }
}

/// Why a component was refused by `prepare`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    #[error("the component is {bytes} bytes, above the limit of {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error(
        "the component does not implement the {expected} world: it lacks the export(s) {} (it exports {}){}",
        missing.join(", "),
        if exports.is_empty() { "no functions".to_string() } else { exports.join(", ") },
        looks_like.map(|w| format!("; it looks built for the {w} world, so set `world = \"{w}\"` or rebuild it")).unwrap_or_default()
    )]
    WrongWorld {
        expected: World,
        missing: Vec<String>,
        exports: Vec<String>,
        looks_like: Option<World>,
    },
    #[error("the component imports {import}, which is refused: {reason}")]
    ForbiddenImport { import: String, reason: String },
    #[error("the component cannot run on this host: {0}")]
    Incompatible(String),
}
