//! serde adapters: `#[serde(with = "volley_units::serde::duration")]` and friends.
//!
//! Each accepts the text form ("30s", "50MiB") or a plain number (seconds,
//! bytes), and writes the text form back, so a file that is read, changed and
//! written again keeps reading the same. Errors go through
//! `serde::de::Error::custom`, so TOML reports them with the line they are on.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serializer};

use crate::{parse_duration, parse_size};

/// A `Duration` field written as "30s" or a number of seconds.
pub mod duration {
    use super::*;

    /// Writes the duration as text that reads back exactly.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::format_duration(*d))
    }

    /// Reads "30s", "250ms", "5m", or a number of seconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// An `Option<Duration>` field: absent or null is `None`.
pub mod option_duration {
    use super::*;

    /// Writes `Some` as text, `None` as none.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&crate::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads what [`duration`](super::duration) reads, or nothing.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<Human>::deserialize(d)?.map(|h| h.0))
    }
}

/// A `Vec<Duration>` field, such as a retry schedule `["1m", "5m", "30m"]`.
pub mod durations {
    use super::*;

    /// Writes each duration as text.
    pub fn serialize<S: Serializer>(ds: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(ds.iter().map(|d| crate::format_duration(*d)))
    }

    /// Reads a list of what [`duration`](super::duration) reads.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Ok(Vec::<Human>::deserialize(d)?
            .into_iter()
            .map(|h| h.0)
            .collect())
    }
}

/// A byte-size `u64` field written as "50MiB" or a number of bytes.
pub mod size {
    use super::*;

    /// Writes the plain number of bytes, which every reader understands.
    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*n)
    }

    /// Reads "50MiB", "2GB", or a number of bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

/// One duration inside an `Option` or a `Vec`.
struct Human(Duration);

impl<'de> Deserialize<'de> for Human {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor).map(Human)
    }
}

struct DurationVisitor;

impl DurationVisitor {
    fn secs<E: de::Error>(secs: f64) -> Result<Duration, E> {
        crate::duration::seconds(secs)
            .ok_or_else(|| E::custom(format!("invalid duration: {secs} seconds is out of range")))
    }
}

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"30s\", \"5m\", \"250ms\", or a number of seconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("invalid duration: {v} seconds is negative")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        Self::secs(v)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size such as \"50MiB\", \"2GB\", or a number of bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
        parse_size(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("invalid size: {v} bytes is negative")))
    }
}

#[cfg(test)]
mod tests {
    use ::serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, PartialEq, Deserialize, Serialize)]
    struct Conf {
        #[serde(with = "duration")]
        timeout: Duration,
        #[serde(default, with = "option_duration")]
        idle: Option<Duration>,
        #[serde(default, with = "durations")]
        retries: Vec<Duration>,
        #[serde(with = "size")]
        budget: u64,
    }

    #[test]
    fn toml_text_and_numbers() {
        let c: Conf = toml::from_str(
            "timeout = \"30s\"\nidle = 2.5\nretries = [\"1m\", 300]\nbudget = \"50MiB\"\n",
        )
        .unwrap();
        assert_eq!(
            c,
            Conf {
                timeout: Duration::from_secs(30),
                idle: Some(Duration::from_millis(2500)),
                retries: vec![Duration::from_secs(60), Duration::from_secs(300)],
                budget: 50 << 20,
            }
        );
        let c: Conf = toml::from_str("timeout = 7\nbudget = 1000\n").unwrap();
        assert_eq!(
            (c.timeout, c.idle, c.budget),
            (Duration::from_secs(7), None, 1000)
        );
    }

    #[test]
    fn written_form_reads_back() {
        let c = Conf {
            timeout: Duration::from_millis(1500),
            idle: None,
            retries: vec![Duration::from_secs(90)],
            budget: 4096,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"timeout":"1s 500ms","idle":null,"retries":["1m 30s"],"budget":4096}"#
        );
        assert_eq!(serde_json::from_str::<Conf>(&json).unwrap(), c);
    }

    #[test]
    fn toml_errors_carry_the_line() {
        let e = toml::from_str::<Conf>("budget = 1\n\ntimeout = \"5x\"\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("line 3"), "{text}");
        assert!(text.contains("invalid duration \"5x\""), "{text}");
        let e = toml::from_str::<Conf>("timeout = -3\nbudget = 1\n").unwrap_err();
        assert!(e.to_string().contains("negative"), "{e}");
        let e = toml::from_str::<Conf>("timeout = 1\nbudget = \"lots\"\n").unwrap_err();
        assert!(e.to_string().contains("invalid size \"lots\""), "{e}");
    }
}
