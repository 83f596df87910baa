//! A DNSSEC-signed zone for tests: hickory-server's in-memory zone handler
//! holding the records a test describes, signed with an Ed25519 key made
//! when it starts (NSEC proofs for names and types that are not there),
//! served like [`TestDnsServer`] on UDP and TCP at 127.0.0.1. Its key,
//! as a DNSKEY record, is the trust anchor a validating resolver starts
//! from.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::dnssec::NxProofKind;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::dnssec::crypto::Ed25519SigningKey;
use hickory_server::proto::dnssec::rdata::{DNSKEY, DNSSECRData};
use hickory_server::proto::dnssec::{DnssecSigner, SigningKey};
use hickory_server::proto::rr::rdata::{A, AAAA, MX, SOA, TLSA};
use hickory_server::proto::rr::{Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

use crate::testserver::TestDnsServer;
use crate::tlsa::TlsaRecord;

/// The TTL of every record of the zone.
const TTL: u32 = 300;

/// What a signed test zone holds, built up before it is served.
pub struct SignedZone {
    origin: Name,
    records: Vec<Record>,
}

/// Why a name given to a [`SignedZone`] cannot be used.
fn bad_name(name: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?}: {e}"))
}

fn fqdn(name: &str) -> io::Result<Name> {
    let mut n = Name::from_ascii(name).map_err(|e| bad_name(name, e))?;
    n.set_fqdn(true);
    Ok(n)
}

impl SignedZone {
    /// An empty zone at `origin` (with its SOA).
    pub fn new(origin: &str) -> io::Result<SignedZone> {
        let origin = fqdn(origin)?;
        let soa = SOA::new(
            fqdn(&format!("ns.{origin}"))?,
            fqdn(&format!("hostmaster.{origin}"))?,
            1,
            3600,
            600,
            86_400,
            TTL,
        );
        Ok(SignedZone {
            records: vec![Record::from_rdata(origin.clone(), TTL, RData::SOA(soa))],
            origin,
        })
    }

    /// MX records of `domain`: (preference, host).
    pub fn mx<'a>(
        mut self,
        domain: &str,
        hosts: impl IntoIterator<Item = (u16, &'a str)>,
    ) -> io::Result<SignedZone> {
        let name = fqdn(domain)?;
        for (preference, host) in hosts {
            let rdata = RData::MX(MX::new(preference, fqdn(host)?));
            self.records
                .push(Record::from_rdata(name.clone(), TTL, rdata));
        }
        Ok(self)
    }

    /// A and AAAA records of `host`.
    pub fn host(
        mut self,
        host: &str,
        addrs: impl IntoIterator<Item = IpAddr>,
    ) -> io::Result<SignedZone> {
        let name = fqdn(host)?;
        for ip in addrs {
            let rdata = match ip {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            self.records
                .push(Record::from_rdata(name.clone(), TTL, rdata));
        }
        Ok(self)
    }

    /// A TLSA record for `host`'s SMTP service on `port`.
    pub fn tlsa(mut self, host: &str, port: u16, record: &TlsaRecord) -> io::Result<SignedZone> {
        let name = fqdn(&format!("_{port}._tcp.{host}"))?;
        let rdata = RData::TLSA(TLSA::new(
            record.usage.into(),
            record.selector.into(),
            record.matching.into(),
            record.data.clone(),
        ));
        self.records.push(Record::from_rdata(name, TTL, rdata));
        Ok(self)
    }
}

impl TestDnsServer {
    /// Signs `zone` with a new Ed25519 key and serves it. Returns the
    /// server and the key as a DNSKEY record in zone-file form: the trust
    /// anchor file a validating resolver needs
    /// ([`ResolverConfig::trust_anchor`](crate::ResolverConfig)).
    pub fn start_signed(zone: SignedZone) -> io::Result<(TestDnsServer, String)> {
        let signing =
            |e: hickory_server::proto::dnssec::DnsSecError| io::Error::other(e.to_string());
        let pkcs8 = Ed25519SigningKey::generate_pkcs8().map_err(signing)?;
        let key = Ed25519SigningKey::from_pkcs8(&pkcs8).map_err(signing)?;
        let dnskey = DNSKEY::from_key(&key.to_public_key().map_err(signing)?);
        let anchor = Record::from_rdata(
            zone.origin.clone(),
            TTL,
            RData::DNSSEC(DNSSECRData::DNSKEY(dnskey.clone())),
        )
        .to_string();
        let mut handler = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            zone.origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
            Some(NxProofKind::Nsec),
        );
        for record in zone.records {
            handler.upsert_mut(record, 0);
        }
        handler
            .add_zone_signing_key_mut(DnssecSigner::new(
                dnskey,
                Box::new(key),
                zone.origin.clone(),
                Duration::from_secs(86_400),
            ))
            .map_err(signing)?;
        handler.secure_zone_mut().map_err(signing)?;
        let mut catalog = Catalog::new();
        catalog.upsert(zone.origin.into(), vec![Arc::new(handler)]);
        Ok((TestDnsServer::serving(catalog)?, anchor))
    }
}
