//! What can go wrong, phrased as what to fix.

use std::path::PathBuf;

/// Every error of the policy engine. The messages say what to fix.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A `.rego` file does not parse. `message` is regorus' own text, which names the file, the
    /// line and the column (`device/topic.rego:12:5: error: …`).
    #[error("policy {file} does not parse: {message}")]
    Parse { file: String, message: String },
    /// The modules parse but do not compile together (unsafe variables, conflicting rules,
    /// unknown functions, …).
    #[error("policies do not compile: {message}")]
    Compile { message: String },
    /// One or more `test_*` rules did not evaluate to `true`; nothing was changed.
    #[error("{} policy test(s) failed: {}", failures.len(), failures.iter().map(|(n, m)| format!("{n}: {m}")).collect::<Vec<_>>().join("; "))]
    TestsFailed { failures: Vec<(String, String)> },
    /// The file is not one of the loaded policy modules.
    #[error("no policy file {0:?} is loaded (see `modules()` for the loaded files)")]
    UnknownFile(String),
    /// The file has no earlier version to go back to.
    #[error("policy file {0:?} has no earlier version to roll back to")]
    NoPreviousVersion(String),
    /// A file name that is not a relative `.rego` path inside the policy directory.
    #[error("invalid policy file name {0:?}: use a relative path ending in .rego, without '..'")]
    InvalidFileName(String),
    /// Evaluation failed (unknown rule path, a builtin error, a conflict at run time, …).
    #[error("evaluating {path} failed: {message}")]
    Eval { path: String, message: String },
    /// Reading or writing a policy file or the decision log failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Watching the policy directory failed.
    #[error("cannot watch {path}: {message}")]
    Watch { path: PathBuf, message: String },
    /// Loading or evaluating an OPA Wasm bundle failed.
    #[error("OPA wasm bundle {path}: {message}")]
    Wasm { path: String, message: String },
}

impl PolicyError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PolicyError::Io {
            path: path.into(),
            source,
        }
    }
}
