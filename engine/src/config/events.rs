//! The `[events]` section: where the event feed POSTs each outcome, and
//! the parse of its URL.

use std::time::Duration;

use serde::Deserialize;

/// The event feed's endpoint and bounds. Without `url`, no feed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// `http://HOST:PORT/PATH` that takes JSON arrays of events.
    pub url: Option<String>,
    /// Events per POST, at most.
    pub batch: usize,
    /// Events held while the endpoint is down or slow; beyond, new ones
    /// are dropped (counted and logged).
    pub queue: usize,
    /// How long one POST may take.
    #[serde(with = "volley_units::serde::duration")]
    pub timeout: Duration,
}

impl Default for EventsSettings {
    fn default() -> Self {
        EventsSettings {
            url: None,
            batch: 100,
            queue: 100_000,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Where the feed sends: `http://HOST:PORT/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
}

impl Endpoint {
    /// Parses an `http://` URL; `https` is not supported yet.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().map_err(|_| format!("{url:?}: bad port"))?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_from_http_urls() {
        let e = Endpoint::parse("http://127.0.0.1:8080/hooks/volley").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("127.0.0.1", 8080, "/hooks/volley")
        );
        let e = Endpoint::parse("http://events.example").unwrap();
        assert_eq!((e.port, e.path.as_str()), (80, "/"));
        let e = Endpoint::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        assert!(Endpoint::parse("https://events.example/").is_err());
        assert!(Endpoint::parse("http://:80/").is_err());
    }
}
