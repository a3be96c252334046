//! The per-plugin log: guest `log` calls and host-side failures, in a bounded ring.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Who wrote a line: the plugin through `log`, or the host about the plugin (traps, denials,
/// suspension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    Guest,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub at_ms: i64,
    pub level: LogLevel,
    pub source: LogSource,
    /// The plugin version that was serving.
    pub version: String,
    pub message: String,
}

pub(crate) struct PluginLog {
    capacity: usize,
    lines: Mutex<VecDeque<LogLine>>,
}

impl PluginLog {
    pub fn new(capacity: usize) -> PluginLog {
        PluginLog {
            capacity,
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    pub fn push(&self, source: LogSource, level: LogLevel, version: &str, message: String) {
        if self.capacity == 0 {
            return;
        }
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let line = LogLine {
            at_ms,
            level,
            source,
            version: version.to_string(),
            message,
        };
        let mut lines = self.lines.lock();
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The newest `limit` lines, oldest first.
    pub fn tail(&self, limit: usize) -> Vec<LogLine> {
        let lines = self.lines.lock();
        let skip = lines.len().saturating_sub(limit);
        lines.iter().skip(skip).cloned().collect()
    }
}
