//! DKIM signing (RFC 6376, RFC 8463 for Ed25519), with Stalwart's
//! `mail-auth`: each message is signed once, at ingest, with every key
//! of its From header's domain (or of the nearest parent domain that has
//! keys, so the signature aligns for DMARC); its recipients' copies share
//! the signed buffer. Relaxed/relaxed, over the fields present of a
//! fixed list (From, To, Subject, Date, Message-ID, the MIME fields,
//! List-Unsubscribe and List-Unsubscribe-Post, ...).
//!
//! An RSA-2048 signature costs about 250 us of CPU here: on a shard's loop
//! that would stall every session and delivery of the shard, so ingest
//! signs on tokio's blocking pool.

mod headers;
mod keys;

pub use keys::DkimError;
pub(crate) use keys::DkimKeys;

use mail_auth::common::headers::HeaderWriter;

use keys::Built;

/// What signing a message gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Signed {
    /// The `DKIM-Signature` fields to put on top of the message, CRLF
    /// terminated, one per key.
    Headers(Vec<u8>),
    /// No key for the From domain (or no From field): sent unsigned.
    NoKey { domain: Option<String> },
}

/// Reads every `[[dkim]]` key file, as start and reload do: what
/// `volley check-config` runs after the file's own checks.
pub fn check_keys(config: &crate::Config) -> Result<(), DkimError> {
    DkimKeys::load(&config.dkim).map(|_| ())
}

/// Signs `message` (header block and body, CRLF line ends) with the keys
/// of its From domain.
pub(crate) fn sign(keys: &DkimKeys, message: &[u8]) -> Result<Signed, String> {
    let Some(domain) = headers::from_domain(message) else {
        return Ok(Signed::NoKey { domain: None });
    };
    let for_domain = keys.for_domain(&domain);
    if for_domain.is_empty() {
        return Ok(Signed::NoKey {
            domain: Some(domain),
        });
    }
    let mask = headers::present(message);
    let input = headers::without_blank_tail(message);
    let mut out = Vec::new();
    for key in for_domain {
        let signer = key.signer(mask)?;
        let signature = match &*signer {
            Built::Rsa(s) => s.sign(input),
            Built::Ed25519(s) => s.sign(input),
        }
        .map_err(|e| format!("signing with {}: {e}", key.describe()))?;
        out.extend_from_slice(signature.to_header().as_bytes());
    }
    Ok(Signed::Headers(out))
}
