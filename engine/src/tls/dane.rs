//! DANE for SMTP (RFC 7672): an MX host whose TLSA records DNSSEC proved
//! is delivered to only over TLS, with a certificate those records name.
//!
//! Only the two usages RFC 7672 3.1 gives SMTP count: DANE-EE (3), the
//! server's own certificate or key, checked without names or dates (the
//! DNS is what vouches for it); and DANE-TA (2), a certificate of the
//! server's chain that issued it, from which the chain is checked as
//! usual, against the MX host's name. PKIX-TA and PKIX-EE (0, 1) are
//! unusable for SMTP, as are selectors and matching types beyond those
//! of RFC 6698; a host with no usable record is not a DANE host.

use std::sync::Arc;

use aws_lc_rs::digest;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore};
use rustls::{SignatureScheme, client::Resumption};
use volley_dns::TlsaRecord;

/// TLSA usages RFC 7672 lets SMTP use.
const DANE_TA: u8 = 2;
const DANE_EE: u8 = 3;

/// The records of `records` that SMTP can use; empty: DANE does not apply.
pub(crate) fn usable(records: &[TlsaRecord]) -> Vec<TlsaRecord> {
    records
        .iter()
        .filter(|r| matches!(r.usage, DANE_TA | DANE_EE))
        .filter(|r| r.selector <= 1 && r.matching <= 2)
        .filter(|r| match r.matching {
            1 => r.data.len() == 32,
            2 => r.data.len() == 64,
            _ => !r.data.is_empty(),
        })
        .cloned()
        .collect()
}

/// Whether `record` names certificate `cert` (its selector's part, in
/// its matching type's form).
fn names(record: &TlsaRecord, cert: &CertificateDer<'_>) -> bool {
    let spki;
    let selected: &[u8] = match record.selector {
        0 => cert.as_ref(),
        _ => match webpki::EndEntityCert::try_from(cert) {
            Ok(parsed) => {
                spki = parsed.subject_public_key_info();
                spki.as_ref()
            }
            Err(_) => return false,
        },
    };
    match record.matching {
        0 => selected == record.data.as_slice(),
        1 => digest::digest(&digest::SHA256, selected).as_ref() == record.data.as_slice(),
        2 => digest::digest(&digest::SHA512, selected).as_ref() == record.data.as_slice(),
        _ => false,
    }
}

/// Checks a server's certificate against an MX host's usable TLSA
/// records; the handshake's signatures as any verifier does.
#[derive(Debug)]
pub(crate) struct DaneVerifier {
    records: Vec<TlsaRecord>,
    provider: Arc<CryptoProvider>,
}

impl DaneVerifier {
    pub(crate) fn new(records: Vec<TlsaRecord>) -> DaneVerifier {
        let provider = CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
        DaneVerifier { records, provider }
    }

    /// A DANE-TA record's certificate in the chain the server sent, made
    /// the only root to check the chain from, against `server_name`.
    fn chain_from_anchor(
        &self,
        record: &TlsaRecord,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> bool {
        let Some(anchor) = intermediates.iter().find(|c| names(record, c)) else {
            return false;
        };
        let mut roots = RootCertStore::empty();
        if roots.add(anchor.clone().into_owned()).is_err() {
            return false;
        }
        let Ok(verifier) =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
        else {
            return false;
        };
        verifier
            .verify_server_cert(end_entity, intermediates, server_name, &[], now)
            .is_ok()
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        for record in &self.records {
            let ok = match record.usage {
                DANE_EE => names(record, end_entity),
                DANE_TA => {
                    self.chain_from_anchor(record, end_entity, intermediates, server_name, now)
                }
                _ => false,
            };
            if ok {
                return Ok(ServerCertVerified::assertion());
            }
        }
        Err(Error::InvalidCertificate(
            CertificateError::ApplicationVerificationFailure,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that accepts only what `records` (usable ones)
/// name. Made per connection to a DANE host: a resumed session would skip
/// the check against records that may have changed since.
pub(crate) fn client_config(records: Vec<TlsaRecord>) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(DaneVerifier::new(records)))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PublicKeyData};

    use super::*;

    fn sha256(data: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA256, data).as_ref().to_vec()
    }

    fn record(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> TlsaRecord {
        TlsaRecord {
            usage,
            selector,
            matching,
            data,
        }
    }

    /// A CA, and a leaf for `name` it issued: (ca, leaf, leaf's key).
    fn chain(name: &str) -> (CertificateDer<'static>, CertificateDer<'static>, KeyPair) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        (ca.der().clone(), leaf.der().clone(), leaf_key)
    }

    fn verify(
        records: Vec<TlsaRecord>,
        leaf: &CertificateDer<'_>,
        chain: &[CertificateDer<'_>],
        name: &str,
    ) -> bool {
        let name = ServerName::try_from(name.to_string()).unwrap();
        DaneVerifier::new(usable(&records))
            .verify_server_cert(leaf, chain, &name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn dane_ee_matches_the_certificate_or_its_key_without_names() {
        let (_, leaf, key) = chain("mx.example");
        let spki = key.subject_public_key_info();
        for r in [
            record(3, 1, 1, sha256(&spki)),
            record(3, 0, 1, sha256(leaf.as_ref())),
            record(3, 1, 0, spki.clone()),
            record(
                3,
                1,
                2,
                digest::digest(&digest::SHA512, &spki).as_ref().to_vec(),
            ),
        ] {
            // The name is not checked for DANE-EE (RFC 7672 3.1.1).
            assert!(
                verify(vec![r.clone()], &leaf, &[], "other.example"),
                "{r:?}"
            );
        }
        let mut wrong = sha256(&spki);
        wrong[0] ^= 1;
        assert!(!verify(
            vec![record(3, 1, 1, wrong)],
            &leaf,
            &[],
            "mx.example"
        ));
    }

    #[test]
    fn dane_ta_checks_the_chain_from_the_named_issuer_and_the_host_name() {
        let (ca, leaf, _) = chain("mx.example");
        let ta = vec![record(2, 0, 1, sha256(ca.as_ref()))];
        assert!(verify(
            ta.clone(),
            &leaf,
            std::slice::from_ref(&ca),
            "mx.example"
        ));
        assert!(
            !verify(
                ta.clone(),
                &leaf,
                std::slice::from_ref(&ca),
                "other.example"
            ),
            "DANE-TA checks the name"
        );
        assert!(
            !verify(ta, &leaf, &[], "mx.example"),
            "the anchor must be sent"
        );
        let (other_ca, _, _) = chain("x.example");
        let elsewhere = vec![record(2, 0, 1, sha256(other_ca.as_ref()))];
        assert!(!verify(
            elsewhere,
            &leaf,
            std::slice::from_ref(&ca),
            "mx.example"
        ));
    }

    #[test]
    fn pkix_usages_and_malformed_records_are_not_usable() {
        let (_, leaf, key) = chain("mx.example");
        let spki_hash = sha256(&key.subject_public_key_info());
        assert!(usable(&[record(1, 1, 1, spki_hash.clone())]).is_empty());
        assert!(usable(&[record(0, 0, 1, spki_hash.clone())]).is_empty());
        assert!(
            usable(&[record(3, 1, 1, vec![1, 2, 3])]).is_empty(),
            "short hash"
        );
        assert!(
            usable(&[record(3, 2, 1, spki_hash.clone())]).is_empty(),
            "selector 2"
        );
        assert!(
            usable(&[record(3, 1, 3, spki_hash.clone())]).is_empty(),
            "matching 3"
        );
        // Unusable records next to a usable one: the usable one decides.
        let mixed = vec![record(1, 1, 1, vec![0; 32]), record(3, 1, 1, spki_hash)];
        assert_eq!(usable(&mixed).len(), 1);
        assert!(verify(mixed, &leaf, &[], "mx.example"));
    }
}
