//! DNSSEC validation and TLSA lookups against a signed zone served on
//! 127.0.0.1, with the zone's own key as the only trust anchor.

use std::future::Future;
use std::net::IpAddr;

use volley_dns::{MxResolver, ResolverConfig, SignedZone, TestDnsServer, TlsaRecord, Validation};

fn run<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A validating resolver for `server`, trusting `anchor` (a DNSKEY
/// record), or one that does not validate.
fn resolver(server: &TestDnsServer, anchor: Option<&str>) -> MxResolver {
    let mut config: ResolverConfig = server.resolver_config();
    if let Some(anchor) = anchor {
        let path = std::env::temp_dir().join(format!(
            "volley-anchor-{}-{}",
            std::process::id(),
            server.addr().port()
        ));
        std::fs::write(&path, anchor).unwrap();
        config.dnssec = true;
        config.trust_anchor = Some(path);
    }
    MxResolver::new(config).unwrap()
}

fn signed() -> (TestDnsServer, String) {
    let ee = TlsaRecord {
        usage: 3,
        selector: 1,
        matching: 1,
        data: vec![0xab; 32],
    };
    let zone = SignedZone::new("dane.test")
        .and_then(|z| z.mx("dane.test", [(10, "mx.dane.test")]))
        .and_then(|z| z.host("mx.dane.test", [ip("127.0.0.9")]))
        .and_then(|z| z.tlsa("mx.dane.test", 25, &ee))
        .and_then(|z| z.mx("plain.dane.test", [(10, "mx.plain.dane.test")]))
        .and_then(|z| z.host("mx.plain.dane.test", [ip("127.0.0.10")]))
        .unwrap();
    TestDnsServer::start_signed(zone).unwrap()
}

#[test]
fn a_signed_zone_validates_and_its_tlsa_records_are_secure() {
    let (server, anchor) = signed();
    let r = resolver(&server, Some(&anchor));
    run(async {
        let route = r.resolve("dane.test").await.unwrap();
        assert!(route.mx_secure, "{route}");
        assert_eq!(route.hosts[0].name, "mx.dane.test");
        let tlsa = r.tlsa("mx.dane.test", 25).await.unwrap();
        assert_eq!(tlsa.validation, Validation::Secure);
        assert_eq!(tlsa.records.len(), 1);
        assert_eq!(tlsa.records[0].usage, 3);
        assert_eq!(tlsa.records[0].data, vec![0xab; 32]);
        // A host without TLSA records: none, and nothing to use.
        let none = r.tlsa("mx.plain.dane.test", 25).await.unwrap();
        assert!(none.records.is_empty());
        // Another port has no records either.
        assert!(
            r.tlsa("mx.dane.test", 2525)
                .await
                .unwrap()
                .records
                .is_empty()
        );
    });
}

#[test]
fn without_validation_nothing_is_secure() {
    let (server, _) = signed();
    let r = resolver(&server, None);
    run(async {
        let route = r.resolve("dane.test").await.unwrap();
        assert!(!route.mx_secure);
        let tlsa = r.tlsa("mx.dane.test", 25).await.unwrap();
        assert_eq!(tlsa.records.len(), 1);
        assert_eq!(tlsa.validation, Validation::Insecure);
    });
}

#[test]
fn answers_that_do_not_validate_against_the_trust_anchor_are_errors() {
    let (server, _) = signed();
    let (_other, wrong) = signed();
    let r = resolver(&server, Some(&wrong));
    run(async {
        let route = r.resolve("dane.test").await;
        assert!(route.is_err(), "{route:?}");
        let tlsa = r.tlsa("mx.dane.test", 25).await;
        assert!(tlsa.is_err(), "{tlsa:?}");
    });
}
