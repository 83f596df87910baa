//! The `[events]` section: where the event feed POSTs each outcome, and
//! the parse of its URL.

use std::time::Duration;

use serde::Deserialize;

/// The event feed's endpoint and bounds. Without `url`, no feed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSettings {
    /// `http://` or `https://HOST:PORT/PATH` that takes JSON arrays of
    /// events.
    pub url: Option<String>,
    /// CA certificates (PEM) an https endpoint's certificate is checked
    /// against instead of the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
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
            ca_file: None,
            batch: 100,
            queue: 100_000,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Where the feed sends: `http://` or `https://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) path: String,
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("{url:?}: not an http:// or https:// URL"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // `[v6]:port`, `host:port`, or either without the port.
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("{url:?}: unclosed ["))?;
                (h, after.strip_prefix(':'))
            }
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| format!("{url:?}: bad port"))?,
            None if https => 443,
            None => 80,
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Endpoint {
            https,
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
        let e = Endpoint::parse("https://events.example/in").unwrap();
        assert!(e.https && e.port == 443);
        assert!(Endpoint::parse("ftp://events.example/").is_err());
        assert!(Endpoint::parse("http://[::1/").is_err());
        let e = Endpoint::parse("http://[::1]/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 80));
        assert!(Endpoint::parse("http://:80/").is_err());
    }
}
