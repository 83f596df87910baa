//! A certificate authority made at start for TLS tests and benchmarks:
//! MX sinks and ingest listeners get certificates it signs, and the
//! sender under test trusts it through its PEM file, as it would trust
//! a public CA; and the rustls configurations the bench's sinks and
//! Composer build from such PEM files. Nothing here is meant for real
//! mail.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::BenchError;

/// A fresh CA: its certificate in PEM, and the key that signs leaves.
pub struct TestCa {
    /// The CA's certificate, PEM: what a client trusts.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM and DER.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    cert_der: rustls::pki_types::CertificateDer<'static>,
    key_der: rustls::pki_types::PrivatePkcs8KeyDer<'static>,
}

fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(format!("test CA: {what}: {e}"))
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Result<TestCa, BenchError> {
        let key = KeyPair::generate().map_err(|e| failed("CA key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params
            .self_signed(&key)
            .map_err(|e| failed("CA certificate", e))?;
        Ok(TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A certificate for `names` (host names, or IP addresses written as
    /// text), signed by this CA; `expired`: one that ran out in 2021.
    pub fn leaf(&self, names: &[&str], expired: bool) -> Result<Leaf, BenchError> {
        let key = KeyPair::generate().map_err(|e| failed("leaf key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        for n in names {
            let san = match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    (*n).try_into()
                        .map_err(|e| failed("a certificate name", e))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| failed("leaf certificate", e))?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
        })
    }

    /// Writes the CA's certificate to `path`.
    pub fn write(&self, path: &Path) -> Result<(), BenchError> {
        std::fs::write(path, &self.cert_pem).map_err(|e| failed("write", e))
    }
}

impl Leaf {
    /// A rustls server configuration presenting this certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, BenchError> {
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], self.key_der.clone_key().into())
            .map_err(|e| failed("server config", e))?;
        with_tickets(config)
    }

    /// Writes the certificate and key as PEM files.
    pub fn write(&self, cert: &Path, key: &Path) -> Result<(), BenchError> {
        std::fs::write(cert, &self.cert_pem).map_err(|e| failed("write", e))?;
        std::fs::write(key, &self.key_pem).map_err(|e| failed("write", e))
    }
}

/// A server configuration from a certificate chain and key in PEM files
/// (what `volley bench certs` writes).
pub fn server_config_from_files(
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ServerConfig>, BenchError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| failed(&cert.display().to_string(), e))?;
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| failed(&key.display().to_string(), e))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| failed("server config", e))?;
    with_tickets(config)
}

/// Resumption as most MX hosts offer it (OpenSSL's default): stateless
/// tickets, two per handshake, rather than rustls's default of a small
/// server-side session cache, which every sink of a run would share.
fn with_tickets(mut config: rustls::ServerConfig) -> Result<Arc<rustls::ServerConfig>, BenchError> {
    config.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| failed("ticketer", e))?;
    Ok(Arc::new(config))
}

/// A client configuration that trusts the CA certificates of a PEM file.
pub fn client_config_trusting(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, BenchError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| failed("CA file", e))? {
        roots
            .add(cert.map_err(|e| failed("CA file", e))?)
            .map_err(|e| failed("CA file", e))?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_makes_a_server_config_and_pem_files() {
        let ca = TestCa::new("Volley test CA").unwrap();
        assert!(ca.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let leaf = ca.leaf(&["mx.test", "127.0.0.1"], false).unwrap();
        assert!(leaf.key_pem.contains("PRIVATE KEY"));
        leaf.server_config().unwrap();
        let dir = std::env::temp_dir().join(format!("volley-test-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca_file, cert, key) = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        ca.write(&ca_file).unwrap();
        leaf.write(&cert, &key).unwrap();
        server_config_from_files(&cert, &key).unwrap();
        client_config_trusting(&ca_file).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
