//! `volley dkim-keygen`: a DKIM signing key (RSA-2048 or Ed25519), written
//! as PKCS#8 PEM readable by its owner only, and the DNS TXT record that
//! publishes its public half at `SELECTOR._domainkey.DOMAIN`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::ValueEnum;
use rcgen::{KeyPair, PublicKeyData};

/// The algorithms `volley dkim-keygen` makes keys for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Algorithm {
    /// RSA-2048 with SHA-256: what every receiver verifies.
    #[value(name = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 (RFC 8463): small and fast; sign with RSA too.
    #[value(name = "ed25519-sha256")]
    Ed25519Sha256,
}

pub(crate) fn run(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let path = out.unwrap_or_else(|| PathBuf::from(format!("{selector}.{domain}.pem")));
    let (key, record) = generate(algorithm)?;
    write_private(&path, &key.serialize_pem())?;
    let name = format!("{selector}._domainkey.{domain}.");
    println!("{name} IN TXT {}", quoted(&record));
    println!();
    println!("[[dkim]]");
    println!("domain = {domain:?}");
    println!("selector = {selector:?}");
    println!("key = {:?}", path.display().to_string());
    println!(
        "algorithm = {:?}",
        match algorithm {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    );
    Ok(())
}

/// A new key and the TXT record text of its public key (RFC 6376 3.6.1;
/// RFC 8463 4: the raw 32-byte key for Ed25519).
fn generate(algorithm: Algorithm) -> anyhow::Result<(KeyPair, String)> {
    Ok(match algorithm {
        Algorithm::RsaSha256 => {
            let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                .context("generating an RSA key")?;
            let p = STANDARD.encode(key.subject_public_key_info());
            (key, format!("v=DKIM1; k=rsa; p={p}"))
        }
        Algorithm::Ed25519Sha256 => {
            let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).context("generating a key")?;
            let p = STANDARD.encode(key.public_key_raw());
            (key, format!("v=DKIM1; k=ed25519; p={p}"))
        }
    })
}

/// Writes `pem` to `path`, mode 0600, refusing to overwrite a key.
fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The record as DNS zone-file strings of at most 255 octets each.
fn quoted(record: &str) -> String {
    let parts: Vec<String> = record
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_hold_the_public_key_in_the_right_form() {
        let (_, rsa) = generate(Algorithm::RsaSha256).unwrap();
        assert!(rsa.starts_with("v=DKIM1; k=rsa; p=MII"), "{rsa}");
        let (_, ed) = generate(Algorithm::Ed25519Sha256).unwrap();
        let p = ed.strip_prefix("v=DKIM1; k=ed25519; p=").unwrap();
        assert_eq!(STANDARD.decode(p).unwrap().len(), 32);
        assert_eq!(quoted(&"a".repeat(300)).matches('"').count(), 4);
    }
}
