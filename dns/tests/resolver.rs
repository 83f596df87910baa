//! The resolver against a real DNS server on 127.0.0.1 (UDP and TCP).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use volley_dns::{
    Fault, MxResolver, ResolveError, ResolverConfig, RouteKind, TestDnsServer, TestZone,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Runs `f` on a current-thread runtime inside a `LocalSet`, as a shard does.
fn run<F: Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// Waits (bounded) until no lookup is running.
async fn settle(r: &MxResolver) {
    for _ in 0..300 {
        if r.in_flight() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("lookups still running after 3 s");
}

fn zone() -> TestZone {
    TestZone::new()
        .mx(
            "a.test",
            [(20, "mx2.a.test"), (10, "mx1.a.test"), (10, "mx3.a.test")],
        )
        .host("mx1.a.test", [ip("127.0.0.2"), ip("::1")])
        .host("mx2.a.test", [ip("127.0.0.3")])
        .host("mx3.a.test", [ip("127.0.0.4")])
        .host("implicit.test", [ip("127.0.0.5")])
        .null_mx("nullmx.test")
        .mx("broken.test", [(10, "mx.broken.test")])
        .host("servfail.test", [ip("127.0.0.6")])
        .fault("servfail.test", Fault::ServFail)
        .host("silent.test", [ip("127.0.0.7")])
        .fault("silent.test", Fault::NoAnswer)
        .host("empty.test", [])
        .mx("noaddr.test", [(10, "nowhere.noaddr.test")])
}

fn resolver(server: &TestDnsServer) -> MxResolver {
    MxResolver::new(server.resolver_config()).unwrap()
}

#[test]
fn mx_hosts_in_preference_order_with_addresses() {
    let server = TestDnsServer::start(zone()).unwrap();
    run(async {
        let r = resolver(&server);
        let route = r.resolve("A.test.").await.unwrap();
        assert_eq!(route.kind, RouteKind::Mx);
        assert_eq!(route.domain, "a.test");
        let prefs: Vec<u16> = route.hosts.iter().map(|h| h.preference).collect();
        assert_eq!(prefs, [10, 10, 20]);
        assert_eq!(route.hosts[2].name, "mx2.a.test");
        let mx1 = route.hosts.iter().find(|h| h.name == "mx1.a.test").unwrap();
        assert_eq!(mx1.addrs, [ip("127.0.0.2"), ip("::1")]);
        assert_eq!(route.ttl, Duration::from_secs(300));
        assert!(!route.is_implicit());
    });
}

#[test]
fn equal_preferences_come_in_both_orders() {
    let server = TestDnsServer::start(zone()).unwrap();
    run(async {
        let mut firsts = std::collections::HashSet::new();
        // a new resolver each time: a new shuffle of the cached order
        for _ in 0..40 {
            let route = resolver(&server).resolve("a.test").await.unwrap();
            firsts.insert(route.hosts[0].name.clone());
        }
        // two candidates, 40 draws: both seen unless (1/2)^39
        assert_eq!(firsts.len(), 2, "{firsts:?}");
    });
}

#[test]
fn max_mx_hosts_limits_the_route() {
    let server = TestDnsServer::start(zone()).unwrap();
    run(async {
        let config = ResolverConfig {
            max_mx_hosts: 2,
            ..server.resolver_config()
        };
        let route = MxResolver::new(config)
            .unwrap()
            .resolve("a.test")
            .await
            .unwrap();
        assert_eq!(route.hosts.len(), 2);
        assert!(route.hosts.iter().all(|h| h.preference == 10));
        // the host left out was never looked up
        assert_eq!(server.queries_for("mx2.a.test"), 0);
    });
}

#[test]
fn no_mx_falls_back_to_the_domains_own_address() {
    let server = TestDnsServer::start(zone()).unwrap();
    run(async {
        let route = resolver(&server).resolve("implicit.test").await.unwrap();
        assert!(route.is_implicit());
        assert_eq!(route.hosts.len(), 1);
        assert_eq!(route.hosts[0].name, "implicit.test");
        assert_eq!(route.hosts[0].addrs, [ip("127.0.0.5")]);
    });
}

#[test]
fn permanent_outcomes() {
    let server = TestDnsServer::start(zone()).unwrap();
    run(async {
        let r = resolver(&server);
        let e = r.resolve("nullmx.test").await.unwrap_err();
        assert!(matches!(e, ResolveError::NullMx { .. }), "{e}");
        assert!(e.is_permanent());
        let e = r.resolve("nosuch.test").await.unwrap_err();
        assert!(matches!(e, ResolveError::NoSuchDomain { .. }), "{e}");
        assert!(e.is_permanent());
        // MX host that does not exist
        let e = r.resolve("noaddr.test").await.unwrap_err();
        assert!(matches!(e, ResolveError::NoAddress { .. }), "{e}");
        assert!(e.is_permanent());
        // the name exists but has neither MX nor address
        let e = r.resolve("empty.test").await.unwrap_err();
        assert!(matches!(e, ResolveError::NoAddress { .. }), "{e}");
        let e = r.resolve("bad..test").await.unwrap_err();
        assert!(matches!(e, ResolveError::InvalidDomain { .. }), "{e}");
        assert!(e.is_permanent());
    });
}

#[test]
fn servfail_is_transient_and_cached_briefly() {
    let server = TestDnsServer::start(zone()).unwrap();
    run(async {
        let r = resolver(&server);
        let e = r.resolve("servfail.test").await.unwrap_err();
        assert!(matches!(e, ResolveError::ServerFailure { .. }), "{e}");
        assert!(e.is_transient());
        let asked = server.queries_for("servfail.test");
        assert!(asked >= 1);
        assert_eq!(r.resolve("servfail.test").await.unwrap_err(), e);
        assert_eq!(
            server.queries_for("servfail.test"),
            asked,
            "second answer from the cache"
        );
        let later = Instant::now() + r.config().transient_ttl;
        assert!(r.cached("servfail.test", later).is_none());
    });
}

#[test]
fn unanswered_query_is_a_transient_timeout() {
    let server = TestDnsServer::start(zone()).unwrap();
    run(async {
        let r = resolver(&server);
        let started = Instant::now();
        let e = r.resolve("silent.test").await.unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(matches!(e, ResolveError::Timeout { .. }), "{e:?}");
        let named = format!("no answer from {}", server.addr());
        assert!(e.to_string().contains(&named), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    });
}

#[test]
fn dead_nameserver_gives_a_transient_error_within_its_timeout() {
    // Bound, never read: queries vanish. Nothing listens on TCP at that port.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = ResolverConfig {
        timeout: Duration::from_millis(300),
        attempts: 2,
        ..ResolverConfig::with_nameserver(dead.local_addr().unwrap())
    };
    run(async {
        let r = MxResolver::new(config).unwrap();
        let started = Instant::now();
        let e = r.resolve("anything.test").await.unwrap_err();
        let took = started.elapsed();
        assert!(e.is_transient(), "{e}");
        // 2 tries of 300 ms each, with room for a loaded machine
        assert!(
            took >= Duration::from_millis(550),
            "gave up early: {took:?}"
        );
        assert!(took < Duration::from_secs(2), "{took:?}");
        let check = r.check_nameservers().await;
        assert!(check.is_err(), "a nameserver that never answers: {check:?}");
    });
}

#[test]
fn a_nameserver_that_answers_passes_the_start_up_check() {
    let server = TestDnsServer::start(zone()).unwrap();
    run(async {
        let r = resolver(&server);
        r.check_nameservers().await.unwrap();
        assert_eq!(r.nameservers(), server.addr().to_string());
    });
}

#[test]
fn negative_answers_are_cached_for_the_soa_minimum() {
    let server = TestDnsServer::start(zone().negative_ttl(60)).unwrap();
    run(async {
        let r = resolver(&server);
        let e = r.resolve("nosuch.test").await.unwrap_err();
        assert_eq!(server.queries_for("nosuch.test"), 1);
        assert_eq!(r.resolve("nosuch.test").await.unwrap_err(), e);
        assert_eq!(server.queries_for("nosuch.test"), 1);
        let now = Instant::now();
        assert_eq!(r.cached("nosuch.test", now), Some(Err(e)));
        assert!(
            r.cached("nosuch.test", now + Duration::from_secs(61))
                .is_none()
        );
        assert!(
            r.cached("nosuch.test", now + Duration::from_secs(50))
                .is_some()
        );
    });
}

#[test]
fn ttls_are_clamped() {
    let server = TestDnsServer::start(zone().name_ttl("a.test", 10)).unwrap();
    run(async {
        let config = ResolverConfig {
            min_ttl: Duration::from_secs(60),
            ..server.resolver_config()
        };
        let route = MxResolver::new(config)
            .unwrap()
            .resolve("a.test")
            .await
            .unwrap();
        assert_eq!(route.ttl, Duration::from_secs(60));
        let config = ResolverConfig {
            max_ttl: Duration::from_secs(30),
            ..server.resolver_config()
        };
        let route = MxResolver::new(config)
            .unwrap()
            .resolve("implicit.test")
            .await
            .unwrap();
        assert_eq!(route.ttl, Duration::from_secs(30));
    });
}

#[test]
fn a_thousand_concurrent_lookups_send_one_query() {
    let server = TestDnsServer::start(zone().latency(Duration::from_millis(50))).unwrap();
    run(async {
        let r = resolver(&server);
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let r = r.clone();
                tokio::task::spawn_local(async move { r.resolve("a.test").await })
            })
            .collect();
        let mut routes = Vec::new();
        for t in tasks {
            routes.push(t.await.unwrap().unwrap());
        }
        assert!(routes.iter().all(|x| Rc::ptr_eq(x, &routes[0])));
        assert_eq!(server.queries_for("a.test"), 1);
        // each MX host: one A and one AAAA query
        assert_eq!(server.queries_for("mx1.a.test"), 2);
        let stats = r.stats();
        assert_eq!(stats.misses, 1000);
        assert_eq!(stats.joined, 999);
        assert_eq!(stats.fetches, 1);
    });
}

#[test]
fn expiry_and_refresh_ahead_of_expiry() {
    let server = TestDnsServer::start(zone().name_ttl("a.test", 100)).unwrap();
    run(async {
        let r = resolver(&server);
        let t0 = Instant::now();
        let first = r.resolve("a.test").await.unwrap();
        assert_eq!(first.ttl, Duration::from_secs(100));
        assert!(
            r.cached("a.test", t0 + Duration::from_secs(101)).is_none(),
            "expired"
        );

        // Not yet at the refresh point (80 s): nothing to do.
        assert_eq!(r.tick(t0 + Duration::from_secs(70), |_| true), 0);
        // At the refresh point but no mail queued: left to expire.
        let unwanted = MxResolver::new(server.resolver_config()).unwrap();
        unwanted.resolve("a.test").await.unwrap();
        assert_eq!(
            unwanted.tick(Instant::now() + Duration::from_secs(85), |_| false),
            0
        );

        // The domain moves to a new MX; a refresh while the old answer is
        // still valid picks it up without any caller waiting.
        server.update(|z| {
            z.mx("a.test", [(5, "new.a.test")])
                .host("new.a.test", [ip("127.0.0.9")])
        });
        let asked = server.queries_for("a.test");
        assert_eq!(r.tick(t0 + Duration::from_secs(85), |d| d == "a.test"), 1);
        settle(&r).await;
        assert_eq!(server.queries_for("a.test"), asked + 1);
        let fresh = r.cached("a.test", Instant::now()).unwrap().unwrap();
        assert_eq!(fresh.hosts[0].name, "new.a.test");
        assert_eq!(fresh.hosts[0].addrs, [ip("127.0.0.9")]);
        assert_eq!(r.stats().refreshes, 1);
        let hits = r.stats().hits;
        r.resolve("a.test").await.unwrap();
        assert_eq!(r.stats().hits, hits + 1);
    });
}

#[test]
fn failed_refresh_keeps_serving_the_old_answer() {
    let server = TestDnsServer::start(zone()).unwrap();
    run(async {
        let r = resolver(&server);
        let first = r.resolve("a.test").await.unwrap();
        server.update(|z| z.fault("a.test", Fault::ServFail));
        assert_eq!(
            r.tick(Instant::now() + Duration::from_secs(250), |_| true),
            1
        );
        settle(&r).await;
        let still = r.cached("a.test", Instant::now()).unwrap().unwrap();
        assert!(Rc::ptr_eq(&first, &still));
        // and it is tried again after the transient TTL
        let retry = Instant::now() + Duration::from_secs(250) + r.config().transient_ttl;
        assert_eq!(r.tick(retry, |_| true), 1);
        settle(&r).await;
    });
}

#[test]
fn prefetch_turns_the_later_lookup_into_a_cache_hit() {
    let server = TestDnsServer::start(zone().latency(Duration::from_millis(20))).unwrap();
    run(async {
        let r = resolver(&server);
        assert_eq!(r.prefetch(["a.test", "implicit.test", "a.test"]), 2);
        assert!(
            r.cached("a.test", Instant::now()).is_none(),
            "not there yet"
        );
        settle(&r).await;
        let before = r.stats();
        assert_eq!(before.prefetches, 2);
        let route = r.resolve("a.test").await.unwrap();
        assert_eq!(route.hosts.len(), 3);
        r.resolve("implicit.test").await.unwrap();
        let after = r.stats();
        assert_eq!(after.hits, before.hits + 2);
        assert_eq!(after.misses, before.misses);
        assert_eq!(server.queries_for("a.test"), 1);
        // already cached and fresh: nothing to prefetch
        assert_eq!(r.prefetch(["a.test"]), 0);
    });
}

#[test]
fn static_routes_and_domain_literals_skip_mx_lookup() {
    let server = TestDnsServer::start(zone()).unwrap();
    run(async {
        let config = ResolverConfig {
            static_routes: HashMap::from([(
                "Smart.test".to_string(),
                vec!["127.0.0.8".to_string(), "mx2.a.test".to_string()],
            )]),
            ..server.resolver_config()
        };
        let r = MxResolver::new(config).unwrap();
        let route = r.resolve("smart.test").await.unwrap();
        assert_eq!(route.kind, RouteKind::Static);
        assert_eq!(route.hosts[0].addrs, [ip("127.0.0.8")]);
        assert_eq!(route.hosts[1].name, "mx2.a.test");
        assert_eq!(route.hosts[1].addrs, [ip("127.0.0.3")]);
        assert_eq!(server.queries_for("smart.test"), 0);
        let route = r.resolve("[127.0.0.5]").await.unwrap();
        assert_eq!(route.kind, RouteKind::Static);
        assert_eq!(route.addrs().collect::<Vec<_>>(), [ip("127.0.0.5")]);
    });
}

#[test]
fn tcp_only_resolution() {
    let server = TestDnsServer::start(zone()).unwrap();
    run(async {
        let config = ResolverConfig {
            udp: false,
            ..server.resolver_config()
        };
        let route = MxResolver::new(config)
            .unwrap()
            .resolve("a.test")
            .await
            .unwrap();
        assert_eq!(route.hosts.len(), 3);
    });
}

#[test]
fn works_inside_a_tokio_uring_runtime() {
    let server = TestDnsServer::start(zone()).unwrap();
    let config = server.resolver_config();
    tokio_uring::start(async move {
        let r = MxResolver::new(config).unwrap();
        let refresher = r.spawn_refresher(Duration::from_millis(50), |_| true);
        let route = r.resolve("a.test").await.unwrap();
        assert_eq!(route.hosts.len(), 3);
        assert!(r.resolve("nullmx.test").await.unwrap_err().is_permanent());
        refresher.abort();
    });
}

#[test]
fn injected_refused_and_nxdomain_faults() {
    let zone = zone()
        .fault("mx2.a.test", Fault::Refused)
        .fault("implicit.test", Fault::NxDomain);
    let server = TestDnsServer::start(zone).unwrap();
    run(async {
        let r = resolver(&server);
        let e = r.resolve("implicit.test").await.unwrap_err();
        assert!(matches!(e, ResolveError::NoSuchDomain { .. }), "{e}");
        // one MX host refused: the route keeps the others, cached only briefly
        let route = r.resolve("a.test").await.unwrap();
        let names: Vec<&str> = route.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(!names.contains(&"mx2.a.test"));
        assert_eq!(route.ttl, r.config().transient_ttl);
        // the server counts what it was asked, faults included
        assert_eq!(server.queries_for("mx2.a.test"), 2);
        assert_eq!(
            server.queries(),
            server.queries_for("implicit.test") + 1 + 2 * 3
        );
    });
}

#[test]
fn txt_records_and_addresses_are_looked_up_uncached() {
    let zone = TestZone::new()
        .txt("_mta-sts.d.test", ["v=STSv1; id=20260101T000000;"])
        .host("mta-sts.d.test", ["127.0.0.9".parse().unwrap()]);
    let server = TestDnsServer::start(zone).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let l = volley_dns::Lookups::new(&server.resolver_config()).unwrap();
        assert_eq!(
            l.txt("_mta-sts.d.test").await.unwrap(),
            ["v=STSv1; id=20260101T000000;"]
        );
        assert!(l.txt("_mta-sts.other.test").await.unwrap().is_empty());
        assert_eq!(
            l.addrs("mta-sts.d.test").await.unwrap(),
            ["127.0.0.9".parse::<std::net::IpAddr>().unwrap()]
        );
    });
}
