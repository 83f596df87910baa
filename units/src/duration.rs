//! Durations: the `humantime` syntax plus a bare number of seconds.

use std::time::Duration;

use crate::error::UnitError;

/// Parses a duration as people write it: "250ms", "30s", "5m", "2h", "1d",
/// "1.5s", "1h 30m", "150us", or a bare number of seconds ("30", "0.5").
///
/// The bare number keeps configuration files written before units were
/// required working; everything else is [`humantime::parse_duration`].
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let t = text.trim();
    let err = |reason: String| UnitError::Duration {
        text: text.to_string(),
        reason,
    };
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = t.parse().map_err(|_| err("not a number".into()))?;
        return seconds(secs).ok_or_else(|| err("out of range".into()));
    }
    humantime::parse_duration(t).map_err(|e| err(e.to_string()))
}

/// A number of seconds from a configuration file, if it is a duration at all.
pub(crate) fn seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

/// Writes a duration so that [`parse_duration`] reads it back exactly:
/// "250ms", "5m", "1m 30s", "150us".
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_config_files_use() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("30sec", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("5min", Duration::from_secs(300)),
            ("2h", Duration::from_secs(7200)),
            ("1d", Duration::from_secs(86_400)),
            ("1.5s", Duration::from_millis(1500)),
            ("150us", Duration::from_micros(150)),
            ("1h 30m", Duration::from_secs(5400)),
            (" 30s ", Duration::from_secs(30)),
            ("2", Duration::from_secs(2)),
            ("0.25", Duration::from_millis(250)),
            ("0", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn refuses_garbage_with_the_text_and_a_hint() {
        for bad in ["", "ms", "5x", "5 parsecs", "-1s", "1..2s", "soon", "1.2.3"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(matches!(&e, UnitError::Duration { text, .. } if text == bad));
            assert!(e.to_string().contains("\"30s\""), "{e}");
        }
        let e = parse_duration("5x").unwrap_err().to_string();
        assert!(e.contains("unknown time unit \"x\""), "{e}");
    }

    #[test]
    fn format_reads_back() {
        for d in ["250ms", "30s", "5m", "2h", "150us", "1m 30s", "1s 500ms"] {
            assert_eq!(format_duration(parse_duration(d).unwrap()), d);
        }
        for d in ["1d", "1.5s", "90", "0.001", "1h 30m"] {
            let parsed = parse_duration(d).unwrap();
            assert_eq!(parse_duration(&format_duration(parsed)), Ok(parsed), "{d}");
        }
    }
}
