//! TLS settings: the `[tls]` section (the certificate ingest presents)
//! and the per-queue policy for delivery (`tls`, `tls_ca_file`,
//! `tls_broken_for` in a queue's settings).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The certificate and key ingest presents on STARTTLS and on `smtps`
/// listeners, as PEM files. Both unset: ingest offers no TLS. Read at
/// start and again on every reload, so a renewed certificate applies
/// without a restart.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Whether a certificate is configured.
    pub fn is_set(&self) -> bool {
        self.cert.is_some() || self.key.is_some()
    }
}

/// What delivery does about TLS with a queue's MX hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPolicy {
    /// STARTTLS whenever the MX host offers it, with no certificate check
    /// (Postfix's `may`). A failed handshake reconnects in clear text,
    /// and the host is remembered as broken for `tls_broken_for`.
    #[default]
    Opportunistic,
    /// TLS or no delivery: a host without STARTTLS, or whose handshake
    /// fails, is skipped and the recipients stay deferred. The
    /// certificate is not checked.
    Required,
    /// TLS with the certificate verified against the MX host's name (the
    /// system's roots, or `tls_ca_file`).
    Verify,
    /// Never STARTTLS.
    Disabled,
}

impl TlsPolicy {
    /// Whether delivery without TLS is refused.
    pub fn requires_tls(self) -> bool {
        matches!(self, TlsPolicy::Required | TlsPolicy::Verify)
    }
}

impl std::fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsPolicy::Opportunistic => "opportunistic",
            TlsPolicy::Required => "required",
            TlsPolicy::Verify => "verify",
            TlsPolicy::Disabled => "disabled",
        })
    }
}

/// MTA-STS (RFC 8461), the `[mta_sts]` section: receivers' policies
/// fetched and applied to delivery. A queue with `tls = "disabled"` or
/// fixed MX hosts does not look them up.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MtaStsSettings {
    /// Look up and apply policies.
    pub enabled: bool,
    /// How long a delivery to a domain seen for the first time waits for
    /// its policy before it goes on without one.
    #[serde(with = "volley_units::serde::duration")]
    pub fetch_timeout: Duration,
    /// Port of the policy hosts' HTTPS: 443 on the internet.
    pub https_port: u16,
    /// CA certificates (PEM) that policy hosts' certificates are checked
    /// against instead of the system's roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for MtaStsSettings {
    fn default() -> Self {
        MtaStsSettings {
            enabled: true,
            fetch_timeout: Duration::from_secs(10),
            https_port: 443,
            ca_file: None,
        }
    }
}

/// A DKIM signature's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum DkimAlgorithm {
    /// RSA with SHA-256 (RFC 6376); 2048-bit keys are what receivers expect.
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 with SHA-256 (RFC 8463); not every receiver verifies it yet,
    /// so sign with RSA too.
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

/// One `[[dkim]]` key: mail whose From domain is `domain` (or a subdomain
/// without keys of its own) is signed with it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// The signing domain (`d=`).
    pub domain: String,
    /// The selector (`s=`): the key is published at
    /// `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// The private key, PEM (`volley dkim-keygen` writes one).
    pub key: PathBuf,
    /// `rsa-sha256` or `ed25519-sha256`.
    pub algorithm: DkimAlgorithm,
}
