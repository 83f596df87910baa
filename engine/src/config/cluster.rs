//! The `[cluster]` section: the Redis several Volley hosts share their
//! pace through, and this host's name among them. Without `redis`, a host
//! paces alone (the default).

use std::time::Duration;

use serde::Deserialize;

/// Longest node name: it is part of every Redis entry the node writes.
const MAX_NODE_NAME: usize = 64;

/// One budget across several hosts.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// The Redis the hosts share, as `redis://host:port` (or
    /// `redis://host:port/db`); unset: this host paces alone.
    pub redis: Option<String>,
    /// This host's name in the cluster, unique among the hosts; empty:
    /// the configuration's `hostname`.
    pub node: String,
    /// How often the cluster thread settles each destination's share with
    /// Redis: claims budget for the next intervals, renews connection
    /// leases, hears the other nodes' cuts.
    #[serde(with = "volley_units::serde::duration")]
    pub sync_interval: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            redis: None,
            node: String::new(),
            sync_interval: Duration::from_millis(50),
        }
    }
}

impl ClusterSettings {
    /// The node's name: `node`, or else `hostname`.
    pub fn node_name<'a>(&'a self, hostname: &'a str) -> &'a str {
        if self.node.is_empty() {
            hostname
        } else {
            &self.node
        }
    }
}

/// Why a node name cannot be used, if it cannot.
pub(super) fn node_name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_NODE_NAME {
        return Some(format!("longer than {MAX_NODE_NAME} characters"));
    }
    let odd = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')));
    odd.map(|c| format!("{c:?} is not allowed (letters, digits, '.', '-', '_')"))
}

/// Why a Redis address cannot be used, if it cannot.
pub(super) fn redis_url_problem(url: &str) -> Option<String> {
    if !url.starts_with("redis://") {
        return Some("must start with redis:// (TLS to Redis is not supported)".into());
    }
    match redis::Client::open(url) {
        Ok(_) => None,
        Err(e) => Some(e.to_string()),
    }
}

/// `url` without its password, for logs and error messages.
pub(crate) fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_and_errors_never_show_the_redis_password() {
        assert_eq!(
            redacted_url("redis://:s3cret@10.0.0.5:6379/2"),
            "redis://***@10.0.0.5:6379/2"
        );
        assert_eq!(
            redacted_url("redis://10.0.0.5:6379"),
            "redis://10.0.0.5:6379"
        );
    }
}
