//! The decision log: every deny and a sample of allows, in memory and optionally as JSON lines.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PolicyError;

/// How much the decision log keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionLogConfig {
    /// Share of allows kept, 0.0 ..= 1.0 (denies are always kept). Sampling is deterministic: with
    /// 0.25 exactly every fourth allow is kept.
    pub sample_allows: f64,
    /// Records kept in memory (a ring buffer: the oldest is dropped first).
    pub capacity: usize,
    /// When set, every kept record is also appended to this file as one JSON line.
    pub jsonl_path: Option<PathBuf>,
}

impl Default for DecisionLogConfig {
    fn default() -> Self {
        Self {
            sample_allows: 0.01,
            capacity: 10_000,
            jsonl_path: None,
        }
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// The decision point: the package, e.g. `lotus.api`.
    pub point: String,
    pub principal: Value,
    pub resource: Value,
    pub action: String,
    pub allow: bool,
    pub reason: Option<String>,
    /// The package version that decided.
    pub version: u64,
    pub latency_us: u64,
}

/// Which records a query returns. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DecisionFilter {
    pub point: Option<String>,
    pub allow: Option<bool>,
    /// Substring of the principal's JSON text (e.g. a user id or a device name).
    pub principal_contains: Option<String>,
    /// Inclusive lower bound on `at_ms`.
    pub since_ms: Option<u64>,
    /// Inclusive upper bound on `at_ms`.
    pub until_ms: Option<u64>,
    /// At most this many records (newest first); `None` = all kept.
    pub limit: Option<usize>,
}

impl DecisionFilter {
    pub fn matches(&self, r: &DecisionRecord) -> bool {
        self.point.as_ref().is_none_or(|p| *p == r.point)
            && self.allow.is_none_or(|a| a == r.allow)
            && self.since_ms.is_none_or(|s| r.at_ms >= s)
            && self.until_ms.is_none_or(|u| r.at_ms <= u)
            && self.principal_contains.as_ref().is_none_or(|needle| {
                serde_json::to_string(&r.principal).is_ok_and(|t| t.contains(needle.as_str()))
            })
    }
}

/// The decision log. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct DecisionLog {
    config: DecisionLogConfig,
    ring: Mutex<VecDeque<DecisionRecord>>,
    allows_seen: AtomicU64,
    file: Mutex<Option<BufWriter<File>>>,
}

impl DecisionLog {
    /// Opens (appends to) the JSON-lines file when one is configured.
    pub fn new(config: DecisionLogConfig) -> Result<Self, PolicyError> {
        let file = match &config.jsonl_path {
            Some(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| PolicyError::io(parent, e))?;
                }
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| PolicyError::io(path, e))?;
                Some(BufWriter::new(f))
            }
            None => None,
        };
        Ok(Self {
            ring: Mutex::new(VecDeque::with_capacity(config.capacity.min(4096))),
            config,
            allows_seen: AtomicU64::new(0),
            file: Mutex::new(file),
        })
    }

    pub fn config(&self) -> &DecisionLogConfig {
        &self.config
    }

    /// Would an allow be kept now? Denies are always kept. Counter-based: the n-th allow is kept
    /// when `floor(n · rate)` grows, so the kept share is exact (0.25 keeps the 4th, 8th, … allow).
    /// Each call counts one allow: a caller that asks first (to build the record only when it is
    /// kept) then hands it to [`DecisionLog::record_kept`].
    pub fn keep_allow(&self) -> bool {
        let rate = self.config.sample_allows.clamp(0.0, 1.0);
        if rate <= 0.0 {
            return false;
        }
        if rate >= 1.0 {
            return true;
        }
        let n = self.allows_seen.fetch_add(1, Ordering::Relaxed);
        ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor()
    }

    /// Records a decision (if kept by sampling). Returns whether it was kept. A failing write to
    /// the JSON-lines file is logged and does not fail the decision.
    pub fn record(&self, record: DecisionRecord) -> bool {
        if record.allow && !self.keep_allow() {
            return false;
        }
        self.record_kept(record);
        true
    }

    /// Records a decision the caller already sampled with [`DecisionLog::keep_allow`].
    pub fn record_kept(&self, record: DecisionRecord) {
        if let Some(w) = self.file.lock().as_mut() {
            let line = serde_json::to_string(&record).unwrap_or_default();
            if let Err(e) = writeln!(w, "{line}").and_then(|()| w.flush()) {
                tracing::warn!(error = %e, "cannot append to the decision log file");
            }
        }
        if self.config.capacity == 0 {
            return;
        }
        let mut ring = self.ring.lock();
        if ring.len() >= self.config.capacity {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// Matching records, newest first.
    pub fn query(&self, filter: &DecisionFilter) -> Vec<DecisionRecord> {
        let ring = self.ring.lock();
        ring.iter()
            .rev()
            .filter(|r| filter.matches(r))
            .take(filter.limit.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// Writes the matching records (newest first) as JSON lines. Returns how many were written.
    pub fn export_jsonl(
        &self,
        filter: &DecisionFilter,
        writer: &mut impl Write,
    ) -> std::io::Result<usize> {
        let records = self.query(filter);
        for r in &records {
            serde_json::to_writer(&mut *writer, r)?;
            writer.write_all(b"\n")?;
        }
        writer.flush()?;
        Ok(records.len())
    }

    /// Records kept in memory now.
    pub fn len(&self) -> usize {
        self.ring.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
