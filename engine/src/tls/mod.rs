//! TLS settings made into rustls configurations, once at start and again
//! on reload: the certificate ingest presents, and the client
//! configurations delivery uses for each queue's policy. The record layer
//! itself lives with the sockets, in the transport module.
//!
//! One client configuration serves every connection of a policy (and CA
//! file), on every shard: its session cache is what lets a second
//! connection to an MX host resume the TLS session instead of paying a
//! full handshake.

mod broken;
pub(crate) mod dane;
mod verify;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::Serialize;

use crate::config::{Config, TlsFiles, TlsPolicy};
use crate::transport::TlsSummary;
pub(crate) use broken::BrokenTls;

/// TLS 1.3 tickets the client side keeps: rustls keeps up to 8 per host,
/// so this is room for the 8,192 MX hosts Volley talked to last.
const CLIENT_SESSIONS: usize = 8 * 8192;

/// Why TLS could not be set up from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// `[tls]` names a certificate without a key, or a key without one.
    #[error("[tls] needs both cert and key")]
    Incomplete,
    /// rustls refused the certificate and key (they do not match, say).
    #[error("certificate {path}: {source}")]
    Rejected {
        /// The certificate file.
        path: PathBuf,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// `verify` without `tls_ca_file`, and no system roots were found.
    #[error("no system CA certificates found for tls = \"verify\": set tls_ca_file")]
    NoRoots,
}

/// How TLS went with one MX host, as the delivery log says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct TlsUsed {
    pub(crate) version: &'static str,
    pub(crate) cipher: &'static str,
    /// The certificate was checked: against the host's name, or its
    /// TLSA records.
    pub(crate) verified: bool,
    /// Checked against the host's TLSA records (DANE).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) dane: bool,
}

impl TlsUsed {
    pub(crate) fn new(summary: TlsSummary, policy: TlsPolicy, dane: bool) -> TlsUsed {
        TlsUsed {
            version: summary.version,
            cipher: summary.cipher,
            verified: policy == TlsPolicy::Verify,
            dane,
        }
    }
}

/// The rustls configurations in force.
pub(crate) struct TlsContext {
    /// What ingest presents; `None`: no `[tls]` certificate.
    pub(crate) server: Option<Arc<ServerConfig>>,
    /// Opportunistic and required: encryption without a certificate check.
    unverified: Arc<ClientConfig>,
    /// Verify: one configuration per CA file (`None`: the system's roots).
    verified: HashMap<Option<PathBuf>, Arc<ClientConfig>>,
}

impl TlsContext {
    /// Reads the files the configuration names. `previous`: the context
    /// in force before a reload, whose client configurations (and their
    /// session caches) are kept where the settings did not change.
    pub(crate) fn load(
        config: &Config,
        previous: Option<&TlsContext>,
    ) -> Result<TlsContext, TlsError> {
        let server = server_config(&config.tls)?;
        let unverified = match previous {
            Some(p) => p.unverified.clone(),
            None => Arc::new(client_config_unverified()),
        };
        // Verifying configurations: for queues that verify, and, with
        // MTA-STS, for every queue that may meet an enforce policy (those
        // may be missing: a policy then cannot be met, and says so).
        let mut verified = HashMap::new();
        let queues =
            std::iter::once(&config.general_queue).chain(config.queues.iter().map(|q| &q.limits));
        for s in queues {
            let needed = s.tls == TlsPolicy::Verify;
            let for_sts = config.mta_sts.enabled && s.tls != TlsPolicy::Disabled;
            let key = s.tls_ca_file.clone();
            if !(needed || for_sts) || verified.contains_key(&key) {
                continue;
            }
            let kept = previous.and_then(|p| p.verified.get(&key)).cloned();
            let made = match kept {
                Some(c) => Ok(c),
                None => client_config_verified(key.as_deref()).map(Arc::new),
            };
            match made {
                Ok(c) => {
                    verified.insert(key, c);
                }
                Err(e) if needed => return Err(e),
                Err(e) => tracing::warn!(
                    target: "volley",
                    "MTA-STS: {e}: an enforce policy cannot be met by queues without tls_ca_file"
                ),
            }
        }
        Ok(TlsContext {
            server,
            unverified,
            verified,
        })
    }

    /// A configuration that checks certificates against `ca_file` (or the
    /// system's roots): the one a queue already verifies with, so the
    /// roots are read once, or else a new one.
    pub(crate) fn verifying(&self, ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
        match self.verified.get(&ca_file.map(Path::to_path_buf)) {
            Some(c) => Ok(c.clone()),
            None => client_config_verified(ca_file).map(Arc::new),
        }
    }

    /// The client configuration for `policy` (and its CA file); `None`
    /// for `disabled`.
    pub(crate) fn client(
        &self,
        policy: TlsPolicy,
        ca_file: Option<&Path>,
    ) -> Option<Arc<ClientConfig>> {
        match policy {
            TlsPolicy::Disabled => None,
            TlsPolicy::Opportunistic | TlsPolicy::Required => Some(self.unverified.clone()),
            TlsPolicy::Verify => self.verified.get(&ca_file.map(Path::to_path_buf)).cloned(),
        }
    }
}

/// Reads every certificate, key and CA file `config` names, as start and
/// reload do: what `volley check-config` runs after the file's own checks.
pub fn check_files(config: &Config) -> Result<(), TlsError> {
    TlsContext::load(config, None).map(|_| ())
}

fn file_error(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// The certificate chain in a PEM file.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn server_config(files: &TlsFiles) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    let (cert, key) = match (&files.cert, &files.key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        _ => return Err(TlsError::Incomplete),
    };
    let chain = certificates(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|source| TlsError::Rejected {
            path: cert.clone(),
            source,
        })?;
    // Composers reconnect all day: let them resume with tickets.
    if let Ok(ticketer) = rustls::crypto::aws_lc_rs::Ticketer::new() {
        config.ticketer = ticketer;
    }
    Ok(Some(Arc::new(config)))
}

fn with_session_cache(mut config: ClientConfig) -> ClientConfig {
    config.resumption = rustls::client::Resumption::in_memory_sessions(CLIENT_SESSIONS);
    config
}

fn client_config_unverified() -> ClientConfig {
    let config = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verify::AnyCertificate::new()))
        .with_no_client_auth();
    with_session_cache(config)
}

/// A client configuration that checks certificates against `ca_file` (or
/// the system's roots) and the server's name.
fn client_config_verified(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| file_error(path, e))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoRoots);
            }
        }
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(with_session_cache(config))
}

/// The name a client presents (SNI) and checks the certificate against:
/// the MX host's name, or its address for a fixed route.
pub(crate) fn server_name(host: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    rustls::pki_types::ServerName::try_from(host.trim_end_matches('.').to_string()).ok()
}
