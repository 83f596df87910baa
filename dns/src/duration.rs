//! Durations written for humans ("30s", "250ms", "5m") in configuration files.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A parsed human duration.
pub(crate) struct HumanDuration(pub(crate) Duration);

impl HumanDuration {
    /// Parses `<number><unit>` with unit one of ms, s, m, h, d; a bare number is seconds.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (examples: 30s, 250ms, 5m)"))?;
        let scale = match unit.trim() {
            "ms" => 0.001,
            "" | "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
        };
        Duration::try_from_secs_f64(value * scale)
            .map(Self)
            .map_err(|e| format!("{text:?}: {e}"))
    }
}

/// Serde `deserialize_with` for a `Duration` written as text or as seconds.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(f64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(t) => HumanDuration::parse(&t)
            .map(|h| h.0)
            .map_err(serde::de::Error::custom),
        Raw::Secs(s) => Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(
            HumanDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            HumanDuration::parse("30s").unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            HumanDuration::parse("5m").unwrap().0,
            Duration::from_secs(300)
        );
        assert_eq!(HumanDuration::parse("2").unwrap().0, Duration::from_secs(2));
        assert!(HumanDuration::parse("5 parsecs").is_err());
        assert!(HumanDuration::parse("").is_err());
    }
}
