//! Logging set-up: one subscriber writing to stderr (stdout is for command output), text or JSON lines. In HTTP
//! mode lines are appended to a bounded batch that a writer thread writes out every few milliseconds ([`batch`]),
//! off the request's thread; when the batch is full, lines are dropped and counted, and the count is logged. An SCF
//! instance writes each line before it answers (it may be frozen right after its reply, and CLS must get every line).

pub mod batch;
pub mod line;

use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

/// Log line format (`WAFER_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Check a `WAFER_LOG` filter without installing it. Each comma-separated directive must be a level
/// (`error`, `warn`, `info`, `debug`, `trace`, `off`) or `target=level`: a lone word such as `verbose` would
/// otherwise be read as a target name and silently turn logging off.
pub fn parse_filter(s: &str) -> Result<String, String> {
    for d in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = d.rsplit_once('=').map_or(d, |(_, l)| l);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "invalid log filter {d:?}: use error, warn, info, debug, trace or off (or target=level)"
            ));
        }
    }
    EnvFilter::try_new(s).map(|_| s.to_owned()).map_err(|e| format!("invalid log filter: {e}"))
}

/// Lines the HTTP mode's log batch holds before it drops.
pub const LOG_BUFFER_LINES: usize = 65_536;

static BACKGROUND: std::sync::OnceLock<batch::BatchWriter> = std::sync::OnceLock::new();

/// Install the global subscriber. `background`: write through a bounded batch on a writer thread (HTTP mode);
/// keep the returned guard until exit — dropping it writes out what is buffered. Calling it twice is harmless (the
/// second call does nothing). Should the writer thread fail to start, lines are written directly.
pub fn init(filter: &str, format: LogFormat, background: bool) -> Option<batch::FlushGuard> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let spawned = if background {
        batch::BatchWriter::spawn(std::io::stderr(), LOG_BUFFER_LINES, "wafer-log").ok()
    } else {
        None
    };
    let (writer, sink, guard) = match spawned {
        Some((w, guard)) => {
            let _ = BACKGROUND.set(w.clone());
            (BoxMakeWriter::new(w.clone()), line::Sink::Batch(w), Some(guard))
        }
        None => (BoxMakeWriter::new(std::io::stderr), line::Sink::Stderr, None),
    };
    if tracing::dispatcher::set_global_default(dispatch(filter, format, writer)).is_ok() {
        let _ = line::OUTPUT.set((sink, format));
    }
    guard
}

/// The subscriber [`init`] installs, writing to `writer` (tests capture its lines with it).
pub fn dispatch(filter: EnvFilter, format: LogFormat, writer: BoxMakeWriter) -> tracing::Dispatch {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(false)
        .with_timer(LineTime);
    match format {
        LogFormat::Text => tracing::Dispatch::new(builder.with_ansi(false).finish()),
        LogFormat::Json => tracing::Dispatch::new(builder.json().flatten_event(true).finish()),
    }
}

/// Timestamps as the default timer writes them (`2026-11-25T20:16:00.123456Z`), with the part up to the second
/// formatted once per second per thread rather than once per line.
struct LineTime;

impl tracing_subscriber::fmt::time::FormatTime for LineTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let mut text = Vec::with_capacity(32);
        line::stamp(&mut text, now);
        w.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?)
    }
}

/// Log lines dropped so far because the buffer was full (0 when writing directly).
pub fn dropped_lines() -> usize {
    BACKGROUND.get().map_or(0, batch::BatchWriter::dropped_lines)
}

/// Every 10 s, log how many lines were dropped since the last report (if any).
pub async fn report_dropped_lines() {
    let mut reported = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
        let now = dropped_lines();
        if now > reported {
            tracing::warn!(dropped = now - reported, total = now, "log buffer full: lines were dropped");
            reported = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_the_default_timers() {
        use tracing_subscriber::fmt::format::Writer;
        use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
        let stamp = |t: &dyn FormatTime| {
            let mut s = String::new();
            t.format_time(&mut Writer::new(&mut s)).unwrap();
            s
        };
        let before = stamp(&SystemTime);
        let ours = stamp(&LineTime);
        let after = stamp(&SystemTime);
        assert_eq!(ours.len(), before.len(), "{ours} vs {before}");
        assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
        assert!(before[..19] <= ours[..19] && ours[..19] <= after[..19], "{before} <= {ours} <= {after}");
    }

    #[test]
    fn filters_are_levels_or_target_levels() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("warn,wafer_scf=debug").is_ok());
        assert!(parse_filter("verbose").is_err());
        assert!(parse_filter("wafer_scf=loud").is_err());
    }
}
