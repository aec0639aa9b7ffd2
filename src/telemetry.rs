//! Logging set-up: one subscriber writing to stderr (stdout is for command output), text or JSON lines.

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

/// Install the global subscriber. Calling it twice is harmless (the second call does nothing).
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_levels_or_target_levels() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("warn,wafer_scf=debug").is_ok());
        assert!(parse_filter("verbose").is_err());
        assert!(parse_filter("wafer_scf=loud").is_err());
    }
}
