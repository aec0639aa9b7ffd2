//! The one line an envelope request is logged with, written by hand on the hot path (the same bytes as tracing's).

use crate::telemetry::line;

/// The one line an envelope request is logged with.
pub(super) struct RequestLine<'a> {
    pub(super) request_id: &'a str,
    pub(super) interface: &'a str,
    pub(super) appid: &'a str,
    pub(super) return_code: i64,
    pub(super) latency_us: u64,
    pub(super) caller: &'a str,
    /// A refused request's detail (empty when it has none); `None` for an answered one.
    pub(super) detail: Option<&'a str>,
}

impl RequestLine<'_> {
    fn fields(&self) -> ([(&'static str, line::Value<'_>); 7], usize) {
        use line::Value::{Int, Quoted, Shown};
        let fields = [
            ("request_id", Shown(self.request_id)),
            ("interface", Shown(self.interface)),
            ("appid", Shown(self.appid)),
            ("return_code", Int(self.return_code)),
            ("latency_us", Int(i64::try_from(self.latency_us).unwrap_or(i64::MAX))),
            ("caller", Shown(self.caller)),
            ("detail", Quoted(self.detail.unwrap_or(""))),
        ];
        (fields, if self.detail.is_some() { 7 } else { 6 })
    }

    /// Written by hand where [`crate::telemetry::init`] set up the output; the same event through tracing otherwise.
    pub(super) fn info(&self) {
        if tracing::enabled!(tracing::Level::INFO) {
            let (fields, n) = self.fields();
            if !line::write(tracing::Level::INFO, "request", &fields[..n]) {
                self.trace_info();
            }
        }
    }

    fn trace_info(&self) {
        let Self { request_id, interface, appid, return_code, latency_us, caller, detail } = self;
        match detail {
            Some(detail) => {
                tracing::info!(request_id = %request_id, interface = %interface, appid = %appid, return_code,
                latency_us, caller = %caller, detail, "request")
            }
            None => {
                tracing::info!(request_id = %request_id, interface = %interface, appid = %appid, return_code,
                latency_us, caller = %caller, "request")
            }
        }
    }

    /// Storage and internal failures: rare, written through tracing at error level.
    pub(super) fn error(&self) {
        let Self { request_id, interface, appid, return_code, latency_us, caller, detail } = self;
        tracing::error!(request_id = %request_id, interface = %interface, appid = %appid, return_code, latency_us,
            caller = %caller, detail = detail.unwrap_or(""), "request");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::line::testing::{both_lines, stamp};
    use crate::telemetry::LogFormat;

    /// The line written by hand is the line tracing writes for the same request, in both formats, whatever the
    /// fields hold (quotes, backslashes, control characters, ANSI escapes, non-ASCII, empty values).
    #[test]
    fn request_lines_written_by_hand_are_the_subscribers_lines() {
        let awkward =
            ["", "plain", "a \"quoted\" \\ value", "line\nbreak\ttab", "\u{1b}[31mred", "中文 é \u{85} 🙂"];
        for format in [LogFormat::Text, LogFormat::Json] {
            for (i, text) in awkward.iter().enumerate() {
                for detail in [None, Some(*text)] {
                    let line = RequestLine {
                        request_id: if i % 2 == 0 { "http-1-7" } else { text },
                        interface: "qcloud.cam.auth",
                        appid: text,
                        return_code: if detail.is_some() { 60012 } else { 0 },
                        latency_us: 1234 + i as u64,
                        caller: text,
                        detail,
                    };
                    let (fields, n) = line.fields();
                    let (ours, theirs) = both_lines(format, || line.trace_info(), "request", &fields[..n]);
                    // The timestamps differ by the time between the two; everything else is the same.
                    let stamp = stamp(format);
                    assert_eq!(ours[stamp.end..], theirs[stamp.end..], "{format:?} {line_id}", line_id = i);
                    assert_eq!(ours[..stamp.start], theirs[..stamp.start]);
                    assert_eq!(ours[stamp.clone()].len(), theirs[stamp.clone()].len());
                    assert!(ours[stamp.clone()].ends_with('Z') && ours.as_bytes()[stamp.start + 19] == b'.');
                    assert!(ours[stamp.clone()][..19] >= theirs[stamp.clone()][..19], "{ours} / {theirs}");
                }
            }
        }
    }
}
