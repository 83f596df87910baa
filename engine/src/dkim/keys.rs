//! The signing keys of `[[dkim]]`, read once at start and again on
//! reload: RSA (PKCS#8 or PKCS#1 PEM) and Ed25519 (PKCS#8 PEM).
//!
//! The crate's signer fixes the list of signed fields when it is built,
//! and a message's list depends on the fields it has; so each key keeps
//! one signer per list met (campaigns repeat the same few), built on
//! first use and shared by the threads that sign.

use std::collections::HashMap;
use std::sync::Arc;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use parking_lot::Mutex;

use crate::config::{DkimAlgorithm, DkimConfig};

/// Field lists a key keeps signers for, at most.
const LISTS_PER_KEY: usize = 64;

/// A signer for one key and one list of fields.
pub(super) enum Built {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

/// One `[[dkim]]` entry.
pub(super) struct Key {
    domain: String,
    selector: String,
    algorithm: DkimAlgorithm,
    pem: String,
    signers: Mutex<HashMap<u32, Arc<Built>>>,
}

/// The keys by domain (lower case), in the order of the file.
#[derive(Default)]
pub(crate) struct DkimKeys {
    by_domain: HashMap<String, Vec<Key>>,
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("dkim key {path} ({domain}, selector {selector}): {why}")]
pub struct DkimError {
    /// The key file.
    pub path: String,
    /// Its entry's domain.
    pub domain: String,
    /// Its entry's selector.
    pub selector: String,
    /// What is wrong.
    pub why: String,
}

impl DkimKeys {
    pub(crate) fn load(entries: &[DkimConfig]) -> Result<DkimKeys, DkimError> {
        let mut by_domain: HashMap<String, Vec<Key>> = HashMap::new();
        for e in entries {
            let fail = |why: String| DkimError {
                path: e.key.display().to_string(),
                domain: e.domain.clone(),
                selector: e.selector.clone(),
                why,
            };
            let pem = std::fs::read_to_string(&e.key).map_err(|err| fail(err.to_string()))?;
            let domain = e.domain.trim_end_matches('.').to_ascii_lowercase();
            let key = Key {
                domain: domain.clone(),
                selector: e.selector.clone(),
                algorithm: e.algorithm,
                pem,
                signers: Mutex::new(HashMap::new()),
            };
            // Parsed now, so a bad key fails the start or the reload.
            key.build(1).map_err(fail)?;
            by_domain.entry(domain).or_default().push(key);
        }
        Ok(DkimKeys { by_domain })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_domain.is_empty()
    }

    /// The keys for mail From `domain`: its own, or else those of the
    /// nearest parent domain that has keys (relaxed alignment).
    pub(super) fn for_domain(&self, domain: &str) -> &[Key] {
        let mut d = domain;
        loop {
            if let Some(keys) = self.by_domain.get(d) {
                return keys;
            }
            match d.split_once('.') {
                Some((_, parent)) if parent.contains('.') => d = parent,
                _ => return &[],
            }
        }
    }
}

impl Key {
    /// The signer for the fields of `mask` (see `headers::present`).
    pub(super) fn signer(&self, mask: u32) -> Result<Arc<Built>, String> {
        if let Some(s) = self.signers.lock().get(&mask) {
            return Ok(s.clone());
        }
        let built = Arc::new(self.build(mask)?);
        let mut signers = self.signers.lock();
        if signers.len() >= LISTS_PER_KEY {
            signers.clear();
        }
        signers.insert(mask, built.clone());
        Ok(built)
    }

    fn build(&self, mask: u32) -> Result<Built, String> {
        Ok(match self.algorithm {
            DkimAlgorithm::RsaSha256 => Built::Rsa(self.signer_for(read_rsa(&self.pem)?, mask)),
            DkimAlgorithm::Ed25519Sha256 => {
                Built::Ed25519(self.signer_for(read_ed25519(&self.pem)?, mask))
            }
        })
    }

    /// A relaxed/relaxed signer of this entry's domain and selector over
    /// the fields of `mask`.
    fn signer_for<T: SigningKey>(&self, key: T, mask: u32) -> DkimSigner<T, Done> {
        DkimSigner::from_key(key)
            .domain(&self.domain)
            .selector(&self.selector)
            .headers(super::headers::names(mask))
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
    }

    pub(super) fn describe(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }
}

fn read_rsa(pem: &str) -> Result<RsaKey<Sha256>, String> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("not a PEM private key: {e}"))?;
    RsaKey::<Sha256>::from_key_der(der).map_err(|e| format!("not an RSA private key: {e}"))
}

fn read_ed25519(pem: &str) -> Result<Ed25519Key, String> {
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use rustls::pki_types::pem::PemObject;
    let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("not a PKCS#8 PEM key: {e}"))?;
    Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der())
        .map_err(|e| format!("not an Ed25519 private key: {e}"))
}
