//! What a guest writes to stdout and stderr: captured per call within a budget, then turned into
//! plugin log lines and, when a Rust guest panicked, the message its trap is reported with.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::Mutex;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::logs::{LogLevel, LogSource, PluginLog};

/// Bytes kept per stream per call; the rest is counted and dropped, so a guest cannot grow host
/// memory by printing.
pub(crate) const MAX_STREAM_BYTES_PER_CALL: usize = 16 << 10;
/// Lines kept per stream per call, so one chatty call cannot push the rest of the plugin's log
/// (the host's own failure lines included) out of its ring.
pub(crate) const MAX_STREAM_LINES_PER_CALL: usize = 200;
/// Longest single line kept, like a message through the `log` capability.
const MAX_LINE_BYTES: usize = 4096;
/// Longest panic message attached to a trap: enough to name the bug, short enough for a dead
/// letter reason or a CLI message.
const MAX_PANIC_MESSAGE_BYTES: usize = 512;
/// stderr remembered past the budget: a guest that floods stderr and then panics still has its
/// panic report (the last thing it writes) found.
const STDERR_TAIL_BYTES: usize = 2048;
/// What a single write may carry; the guest's libc splits larger writes.
const WRITE_PERMIT: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// stderr is where guests report trouble (and Rust reports panics); stdout is chatter.
    fn level(self) -> LogLevel {
        match self {
            Stream::Stdout => LogLevel::Info,
            Stream::Stderr => LogLevel::Warn,
        }
    }
}

/// Both output streams of one store. Shared by the store, which takes what each call wrote, and
/// the WASI streams the guest writes through.
pub(crate) struct GuestOutput {
    /// Set by every write and cleared by [`GuestOutput::take`], so a call that wrote nothing
    /// costs one atomic load and no lock.
    written: AtomicBool,
    captured: Mutex<Captured>,
}

#[derive(Default)]
struct Captured {
    /// Complete lines of the current call, both streams in the order they were ended.
    lines: Vec<(Stream, String)>,
    stdout: StreamState,
    stderr: StreamState,
}

#[derive(Default)]
struct StreamState {
    /// The line being written: no newline yet.
    partial: Vec<u8>,
    kept_bytes: usize,
    kept_lines: usize,
    dropped_bytes: usize,
    /// stderr only: the latest bytes dropped past the budget.
    tail: Vec<u8>,
}

impl GuestOutput {
    pub fn new() -> Arc<GuestOutput> {
        Arc::new(GuestOutput {
            written: AtomicBool::new(false),
            captured: Mutex::new(Captured::default()),
        })
    }

    /// The WASI stdout or stderr of the store that owns this capture.
    pub fn stream(self: &Arc<Self>, stream: Stream) -> CaptureStream {
        CaptureStream {
            output: self.clone(),
            stream,
        }
    }

    fn write(&self, stream: Stream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut captured = self.captured.lock();
        let Captured {
            lines,
            stdout,
            stderr,
        } = &mut *captured;
        let state = match stream {
            Stream::Stdout => stdout,
            Stream::Stderr => stderr,
        };
        let mut rest = data;
        while !rest.is_empty() {
            let room = if state.kept_lines < MAX_STREAM_LINES_PER_CALL {
                MAX_STREAM_BYTES_PER_CALL - state.kept_bytes
            } else {
                0
            };
            if room == 0 {
                state.drop_bytes(stream, rest);
                break;
            }
            let line_end = rest.iter().position(|&b| b == b'\n');
            let take = line_end.map_or(rest.len(), |end| end + 1).min(room);
            let (chunk, after) = rest.split_at(take);
            state.kept_bytes += take;
            match chunk.strip_suffix(b"\n") {
                Some(line) => {
                    state.partial.extend_from_slice(line);
                    if let Some(line) = finish_line(&mut state.partial) {
                        lines.push((stream, line));
                        state.kept_lines += 1;
                    }
                }
                None => state.partial.extend_from_slice(chunk),
            }
            rest = after;
        }
        drop(captured);
        self.written.store(true, Ordering::Release);
    }

    /// What the guest wrote since the last take; `None`, without locking, when it wrote nothing.
    /// Resets the per-call budget, so a pooled instance starts every call with a clean slate.
    pub fn take(&self) -> Option<CallOutput> {
        if !self.written.load(Ordering::Acquire) {
            return None;
        }
        let captured = std::mem::take(&mut *self.captured.lock());
        self.written.store(false, Ordering::Release);
        Some(CallOutput::from(captured))
    }
}

impl StreamState {
    fn drop_bytes(&mut self, stream: Stream, bytes: &[u8]) {
        self.dropped_bytes += bytes.len();
        if stream == Stream::Stderr {
            let bytes = &bytes[bytes.len().saturating_sub(STDERR_TAIL_BYTES)..];
            self.tail.extend_from_slice(bytes);
            // Trimmed only once it doubles, so a flood of small writes does not shift the buffer
            // on every write.
            if self.tail.len() > 2 * STDERR_TAIL_BYTES {
                self.tail.drain(..self.tail.len() - STDERR_TAIL_BYTES);
            }
        }
    }
}

/// The line without its newline (and `\r`), or `None` for a blank line, which says nothing in a
/// log.
fn finish_line(partial: &mut Vec<u8>) -> Option<String> {
    let bytes = std::mem::take(partial);
    let text = String::from_utf8_lossy(&bytes);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    if text.trim().is_empty() {
        return None;
    }
    Some(cut(text, MAX_LINE_BYTES))
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// What one call wrote, ready for the plugin log.
pub(crate) struct CallOutput {
    lines: Vec<(LogLevel, String)>,
    panic: Option<String>,
}

impl From<Captured> for CallOutput {
    fn from(mut captured: Captured) -> CallOutput {
        // A last line without a newline is still what the guest said during this call.
        for stream in [Stream::Stdout, Stream::Stderr] {
            let state = match stream {
                Stream::Stdout => &mut captured.stdout,
                Stream::Stderr => &mut captured.stderr,
            };
            if let Some(line) = finish_line(&mut state.partial) {
                captured.lines.push((stream, line));
            }
        }
        let stderr_lines = captured
            .lines
            .iter()
            .filter(|(stream, _)| *stream == Stream::Stderr)
            .flat_map(|(_, line)| line.lines());
        let panic = panic_report(stderr_lines).or_else(|| {
            let tail = String::from_utf8_lossy(&captured.stderr.tail);
            panic_report(tail.lines())
        });
        let mut lines: Vec<(LogLevel, String)> = captured
            .lines
            .into_iter()
            .map(|(stream, line)| (stream.level(), line))
            .collect();
        for (stream, state) in [
            (Stream::Stdout, &captured.stdout),
            (Stream::Stderr, &captured.stderr),
        ] {
            if state.dropped_bytes > 0 {
                lines.push((
                    stream.level(),
                    format!(
                        "… (truncated: {} more bytes written to {} during this call were not \
                         kept; at most {MAX_STREAM_BYTES_PER_CALL} bytes and \
                         {MAX_STREAM_LINES_PER_CALL} lines per stream are kept per call)",
                        state.dropped_bytes,
                        stream.name()
                    ),
                ));
            }
        }
        CallOutput { lines, panic }
    }
}

impl CallOutput {
    /// Puts the lines into the plugin log as the guest's, tagged with the serving version.
    pub fn record(&mut self, log: &PluginLog, version: &str) {
        for (level, message) in self.lines.drain(..) {
            log.push(LogSource::Guest, level, version, message);
        }
    }

    /// The message of the panic the guest reported during the call, e.g.
    /// `panicked at src/lib.rs:12:9: codec bug: …`.
    pub fn panic(&self) -> Option<&str> {
        self.panic.as_deref()
    }
}

/// Finds the last panic report in stderr lines. Rust's std prints
/// `thread '…' panicked at <file>:<line>:<col>:`, the message on the lines after, then a
/// `note: run with RUST_BACKTRACE=1 …` hint.
fn panic_report<'a>(lines: impl Iterator<Item = &'a str>) -> Option<String> {
    let lines: Vec<&str> = lines.collect();
    let start = lines.iter().rposition(|l| l.contains("panicked at "))?;
    let header = lines[start];
    let location = header[header.find("panicked at ")?..].trim_end();
    let mut report = location.strip_suffix(':').unwrap_or(location).to_string();
    let mut separator = ": ";
    for line in &lines[start + 1..] {
        if line.starts_with("note: ") || line.starts_with("stack backtrace:") {
            break;
        }
        report.push_str(separator);
        report.push_str(line.trim());
        separator = " ";
        if report.len() > MAX_PANIC_MESSAGE_BYTES {
            break;
        }
    }
    Some(cut(&report, MAX_PANIC_MESSAGE_BYTES))
}

/// One of the guest's output streams, writing into its store's [`GuestOutput`]. Always ready and
/// never failing: output past the budget is dropped silently, because a guest whose `println!`
/// failed would panic and turn chatter into a trap.
#[derive(Clone)]
pub(crate) struct CaptureStream {
    output: Arc<GuestOutput>,
    stream: Stream,
}

impl OutputStream for CaptureStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.output.write(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CaptureStream {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CaptureStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.output.write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(output: &CallOutput) -> Vec<(LogLevel, &str)> {
        output
            .lines
            .iter()
            .map(|(level, line)| (*level, line.as_str()))
            .collect()
    }

    #[test]
    fn nothing_written_takes_nothing() {
        let output = GuestOutput::new();
        assert!(output.take().is_none());
        output.write(Stream::Stdout, b"");
        assert!(output.take().is_none());
    }

    #[test]
    fn lines_split_across_writes_keep_their_order_and_level() {
        let output = GuestOutput::new();
        output.write(Stream::Stdout, b"hel");
        output.write(Stream::Stderr, b"oops\r\n\n");
        output.write(Stream::Stdout, b"lo\nsecond");
        let taken = output.take().unwrap();
        assert_eq!(
            lines(&taken),
            vec![
                (LogLevel::Warn, "oops"),
                (LogLevel::Info, "hello"),
                (LogLevel::Info, "second"),
            ]
        );
        assert!(taken.panic().is_none());
        // Taken once: the next call starts empty.
        assert!(output.take().is_none());
    }

    #[test]
    fn the_budget_is_per_call() {
        let output = GuestOutput::new();
        output.write(Stream::Stdout, &vec![b'a'; MAX_STREAM_BYTES_PER_CALL + 10]);
        let first = output.take().unwrap();
        assert_eq!(first.lines.len(), 2);
        assert!(first.lines[1].1.contains("10 more bytes written to stdout"));
        output.write(Stream::Stdout, b"fresh\n");
        assert_eq!(
            lines(&output.take().unwrap()),
            vec![(LogLevel::Info, "fresh")]
        );
    }

    #[test]
    fn line_count_is_bounded() {
        let output = GuestOutput::new();
        for _ in 0..MAX_STREAM_LINES_PER_CALL + 5 {
            output.write(Stream::Stderr, b"x\n");
        }
        let taken = output.take().unwrap();
        assert_eq!(taken.lines.len(), MAX_STREAM_LINES_PER_CALL + 1);
        assert!(taken.lines.last().unwrap().1.contains("10 more bytes"));
    }

    #[test]
    fn rust_panic_report_is_found() {
        let output = GuestOutput::new();
        for piece in [
            "\nthread '<unnamed>' panicked at ",
            "src/lib.rs:12:9",
            ":\n",
            "codec bug: cannot handle a 3-byte frame",
            "\n",
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n",
        ] {
            output.write(Stream::Stderr, piece.as_bytes());
        }
        let taken = output.take().unwrap();
        assert_eq!(
            taken.panic(),
            Some("panicked at src/lib.rs:12:9: codec bug: cannot handle a 3-byte frame")
        );
    }

    #[test]
    fn panic_after_a_flood_is_still_found_and_kept_short() {
        let output = GuestOutput::new();
        output.write(Stream::Stderr, &vec![b'z'; 1 << 20]);
        let message = "m".repeat(2000);
        output.write(
            Stream::Stderr,
            format!("\nthread 'main' panicked at src/lib.rs:1:1:\n{message}\n").as_bytes(),
        );
        let panic = output.take().unwrap().panic.unwrap();
        assert!(
            panic.starts_with("panicked at src/lib.rs:1:1: mmm"),
            "{panic}"
        );
        assert!(panic.len() <= MAX_PANIC_MESSAGE_BYTES + '…'.len_utf8());
    }
}
