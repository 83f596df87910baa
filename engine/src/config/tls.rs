//! TLS settings: the `[tls]` section (the certificate ingest presents)
//! and the per-queue policy for delivery (`tls`, `tls_ca_file`,
//! `tls_broken_for` in a queue's settings).

use std::path::PathBuf;

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
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
