//! The `[admin]` section: where the admin HTTP server (metrics, status,
//! queue control) listens, and the token it asks of clients.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// The admin server's address and credentials.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Where it listens (port 0: any free one, logged at start).
    pub listen: SocketAddr,
    /// Serve the admin API at all.
    pub enabled: bool,
    /// A file holding the bearer token clients must send
    /// (`Authorization: Bearer TOKEN`); required when `listen` is not a
    /// loopback address.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8025)),
            enabled: true,
            token_file: None,
        }
    }
}
