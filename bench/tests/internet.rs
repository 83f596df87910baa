//! The simulated internet over real sockets: DNS answers, sinks that enforce
//! connection limits, rate limits and latency, and accounting that catches a
//! lost and a duplicated message.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use volley_bench::{
    ComposeConfig, ComposeOutcome, DomainMix, LatencySummary, LoadSpec, Scenario, SentRecord,
    SimulatedInternet, spawn_compose,
};

fn scenario(toml: &str) -> Scenario {
    Scenario::from_toml(toml).expect("test scenario")
}

fn one_domain(capacity: &str) -> Scenario {
    scenario(&format!(
        "name = \"t\"\n[[domain]]\nname = \"a.test\"\nmx = 1\ncapacity = {{ {capacity} }}\n"
    ))
}

fn sink_addr(internet: &SimulatedInternet, domain: usize) -> SocketAddr {
    let ip = internet.domains()[domain].hosts[0].1;
    SocketAddr::new(IpAddr::V4(ip), internet.sink_port())
}

fn compose_to(internet: &SimulatedInternet, load: LoadSpec) -> ComposeOutcome {
    spawn_compose(ComposeConfig {
        target: sink_addr(internet, 0),
        load,
        mix: DomainMix::of_scenario(internet.domains()).unwrap(),
        seed: 1,
        run_id: "t".into(),
        timeout: Duration::from_secs(30),
        routes: Vec::new(),
        tls: None,
    })
    .unwrap()
    .join()
    .unwrap()
}

fn first_line(stream: &TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

#[test]
fn sinks_refuse_connections_over_the_limit_with_421() {
    let internet = SimulatedInternet::start(&one_domain("max_connections = 2")).unwrap();
    let addr = sink_addr(&internet, 0);
    let a = TcpStream::connect(addr).unwrap();
    let b = TcpStream::connect(addr).unwrap();
    assert!(first_line(&a).starts_with("220"));
    assert!(first_line(&b).starts_with("220"));
    let c = TcpStream::connect(addr).unwrap();
    let refused = first_line(&c);
    assert!(refused.starts_with("421 4.7.0"), "{refused:?}");
    // Closing one frees its slot (the sink notices the close asynchronously).
    let mut a = a;
    a.write_all(b"QUIT\r\n").unwrap();
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = TcpStream::connect(addr).unwrap();
        if first_line(&d).starts_with("220") {
            break;
        }
        assert!(Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let counters = &internet.counters()[0];
    assert!(counters.total.refused_connections >= 1);
    assert_eq!(counters.peak_connections, 2);

    // Clamped to one connection while running (b holds it): refused.
    assert!(internet.set_capacity(
        "a.test",
        volley_bench::Capacity {
            max_connections: 1,
            ..Default::default()
        }
    ));
    assert!(!internet.set_capacity("nowhere.test", Default::default()));
    let e = TcpStream::connect(addr).unwrap();
    assert!(first_line(&e).starts_with("421 4.7.0"));
}

#[test]
fn sinks_rate_limit_a_fast_sender_with_451_and_keep_under_the_rate() {
    let internet = SimulatedInternet::start(&one_domain("max_rate = 40.0, burst = 10.0")).unwrap();
    let started = Instant::now();
    let outcome = compose_to(
        &internet,
        LoadSpec {
            messages: 60,
            connections: 4,
            ..LoadSpec::default()
        },
    );
    let elapsed = started.elapsed();
    assert_eq!(outcome.summary.accepted, 60, "{:?}", outcome.summary);
    assert!(outcome.summary.refused_transient > 0, "never throttled");
    let c = &internet.counters()[0];
    assert!(c.total.rate_limited > 0);
    assert_eq!(c.total.accepted, 60);
    // 10 at once, then 40/s: 50 more take at least 1.25 s.
    assert!(elapsed >= Duration::from_millis(1200), "{elapsed:?}");
    for (second, counts) in c.per_second.iter().enumerate() {
        assert!(
            counts.accepted <= 50,
            "second {second}: {}",
            counts.accepted
        );
    }
    assert!(internet.accounting(&outcome.sent).is_clean());
}

#[test]
fn sinks_delay_replies_by_their_latency() {
    let internet = SimulatedInternet::start(&one_domain("latency = \"150ms\"")).unwrap();
    let started = Instant::now();
    let outcome = compose_to(
        &internet,
        LoadSpec {
            messages: 4,
            connections: 1,
            ..LoadSpec::default()
        },
    );
    assert_eq!(outcome.summary.accepted, 4);
    assert!(started.elapsed() >= Duration::from_millis(600));
    let latency = LatencySummary::of(
        internet
            .deliveries()
            .iter()
            .map(|d| d.accepted_micros - d.sent_micros.unwrap()),
    );
    assert!(latency.p50_ms >= 150.0, "{latency:?}");
    assert!(latency.max_ms < 1000.0, "{latency:?}");
}

#[test]
fn unknown_mailboxes_bounce_and_are_expected_by_the_ledger() {
    let internet = SimulatedInternet::start(&one_domain("unknown_share = 0.3")).unwrap();
    let outcome = compose_to(
        &internet,
        LoadSpec {
            messages: 100,
            connections: 2,
            ..LoadSpec::default()
        },
    );
    let s = &outcome.summary;
    assert!(s.refused_permanent > 10, "{s:?}");
    assert_eq!(s.accepted + s.refused_permanent, 100);
    assert_eq!(internet.counters()[0].total.unknown, s.refused_permanent);
}

#[test]
fn accounting_catches_a_lost_and_a_duplicated_message() {
    let internet = SimulatedInternet::start(&one_domain("")).unwrap();
    let outcome = compose_to(
        &internet,
        LoadSpec {
            messages: 20,
            connections: 2,
            ..LoadSpec::default()
        },
    );
    let clean = internet.accounting(&outcome.sent);
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.delivered, 20);

    // A message the relay accepted but never delivered.
    let mut sent = outcome.sent.clone();
    sent.push(SentRecord {
        id: "t.999".into(),
        recipient: "user999@a.test".into(),
        digest: 0,
        uncertain: false,
    });
    let lost = internet.accounting(&sent);
    assert_eq!((lost.lost, lost.duplicates), (1, 0));
    assert!(!lost.is_clean());

    // The same messages delivered a second time (as a relay that retries
    // after a lost 250 would): every one is a duplicate.
    let again = compose_to(
        &internet,
        LoadSpec {
            messages: 1,
            connections: 1,
            ..LoadSpec::default()
        },
    );
    assert_eq!(again.sent[0].id, "t.0");
    let dup = internet.accounting(&outcome.sent);
    assert_eq!((dup.duplicates, dup.lost), (1, 0), "{dup:?}");
    assert_eq!(dup.duplicate_examples, vec!["t.0".to_string()]);
    assert!(!dup.is_clean());
}

#[test]
fn dns_sends_each_domain_to_its_own_sinks() {
    let s = scenario(
        "name = \"t\"\n[[domain]]\nname = \"big.test\"\nmx = 3\n[[group]]\nprefix = \"tail\"\ncount = 5\n",
    );
    let internet = SimulatedInternet::start(&s).unwrap();
    let config = internet.resolver_config();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let resolver = volley_dns::MxResolver::new(config).unwrap();
        for d in internet.domains() {
            let route = resolver.resolve(&d.name).await.unwrap();
            let mut got: Vec<IpAddr> = route.addrs().collect();
            let mut want: Vec<IpAddr> = d.hosts.iter().map(|h| IpAddr::V4(h.1)).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{}", d.name);
        }
    });
    assert!(internet.dns_queries() >= 6);
}

#[test]
fn greylisting_drops_and_slow_data_over_sockets() {
    let internet = SimulatedInternet::start(&one_domain(
        "greylist = true, drop_share = 0.3, data_delay = \"50ms\"",
    ))
    .unwrap();
    let started = Instant::now();
    let outcome = compose_to(
        &internet,
        LoadSpec {
            messages: 40,
            connections: 2,
            ..LoadSpec::default()
        },
    );
    let c = internet.counters()[0].total;
    // Every recipient was greylisted once, then tried again.
    assert_eq!(c.greylisted, 40);
    assert!(outcome.summary.refused_transient >= 40);
    // Some sessions were cut after the body: those messages are uncertain
    // (not kept by the sink), the rest delivered exactly once.
    assert!(c.dropped > 0, "{c:?}");
    let uncertain = outcome.sent.iter().filter(|s| s.uncertain).count() as u64;
    assert_eq!(uncertain, c.dropped);
    assert_eq!(outcome.summary.accepted, c.accepted);
    assert_eq!(outcome.summary.accepted + uncertain, 40);
    let acc = internet.accounting(&outcome.sent);
    assert!(acc.is_clean(), "{acc:?}");
    assert_eq!(acc.uncertain_undelivered, uncertain);
    // Each of the 40 bodies waited 50 ms for its 354, two at a time.
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
}

/// A routed Composer delivers each message to its own domain's MX host,
/// whether it has fewer connections than hosts (each connection visits
/// several in turn) or more (several per host), and the routes survive the
/// transport-map text the internet writes.
#[test]
fn routed_composer_delivers_each_message_to_its_domains_sink() {
    let s = scenario("name = \"t\"\n[[group]]\nprefix = \"r\"\ncount = 5\n");
    for connections in [2, 12] {
        let internet = SimulatedInternet::start(&s).unwrap();
        let routes = volley_bench::parse_routes(&internet.routes()).unwrap();
        assert_eq!(routes, internet.mx_routes());
        let load = LoadSpec {
            messages: 500,
            connections,
            ..LoadSpec::default()
        };
        let outcome = spawn_compose(ComposeConfig {
            // Nothing listens here: every message must go by its route.
            target: "127.0.0.1:1".parse().unwrap(),
            load,
            mix: DomainMix::of_scenario(internet.domains()).unwrap(),
            seed: 1,
            run_id: format!("routed{connections}"),
            timeout: Duration::from_secs(30),
            routes,
            tls: None,
        })
        .unwrap()
        .join()
        .unwrap();
        assert_eq!(outcome.summary.accepted, 500, "{connections} connections");
        let acc = internet.accounting(&outcome.sent);
        assert!(acc.is_clean(), "{acc:?}");
        let deliveries = internet.deliveries();
        assert_eq!(deliveries.len(), 500);
        for d in &deliveries {
            assert!(
                d.recipient.ends_with(&format!("@{}", d.domain)),
                "{} reached the sink of {}",
                d.recipient,
                d.domain
            );
        }
        let counters = internet.counters();
        assert!(counters.iter().all(|c| c.total.connections >= 1));
        let total: u64 = counters.iter().map(|c| c.total.connections).sum();
        assert_eq!(total, u64::from(connections.max(5)), "sessions opened");
    }
}

#[test]
fn a_routed_load_refuses_a_domain_without_a_route() {
    let s = scenario("name = \"t\"\n[[group]]\nprefix = \"r\"\ncount = 3\n");
    let internet = SimulatedInternet::start(&s).unwrap();
    let mut routes = internet.mx_routes();
    routes.pop();
    let err = spawn_compose(ComposeConfig {
        target: "127.0.0.1:1".parse().unwrap(),
        load: LoadSpec {
            messages: 100,
            connections: 2,
            ..LoadSpec::default()
        },
        mix: DomainMix::of_scenario(internet.domains()).unwrap(),
        seed: 1,
        run_id: "noroute".into(),
        timeout: Duration::from_secs(10),
        routes,
        tls: None,
    })
    .unwrap()
    .join()
    .unwrap_err();
    assert!(err.to_string().contains("no route for domain"), "{err}");
}

#[test]
fn a_composer_sends_over_starttls_into_sinks_that_offer_it() {
    use volley_bench::{InternetOptions, TestCa, client_config_trusting};
    let ca = TestCa::new("bench test CA").unwrap();
    let dir = std::env::temp_dir().join(format!("volley-bench-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    ca.write(&ca_file).unwrap();
    let scenario = one_domain("max_connections = 4");
    let ip = scenario.domains().unwrap()[0].hosts[0].1.to_string();
    let leaf = ca.leaf(&[&ip], false).unwrap();
    let options = InternetOptions {
        tls: Some(leaf.server_config().unwrap()),
        ..InternetOptions::default()
    };
    let internet = SimulatedInternet::start_with(&scenario, &options).unwrap();
    let outcome = spawn_compose(ComposeConfig {
        target: sink_addr(&internet, 0),
        load: LoadSpec {
            messages: 20,
            connections: 2,
            ..LoadSpec::default()
        },
        mix: DomainMix::of_scenario(internet.domains()).unwrap(),
        seed: 1,
        run_id: "tls".into(),
        timeout: Duration::from_secs(30),
        routes: Vec::new(),
        tls: Some(client_config_trusting(&ca_file).unwrap()),
    })
    .unwrap()
    .join()
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(outcome.summary.accepted, 20, "{:?}", outcome.summary);
    assert!(internet.accounting(&outcome.sent).is_clean());
}

/// A provider of three domains with one capacity for all of them.
fn provider(mx_names: &str, capacity: &str) -> Scenario {
    scenario(&format!(
        "name = \"t\"\n[[domain]]\nname = \"own.test\"\nmx = 2\n\
         [[provider]]\nname = \"big\"\nprefix = \"b\"\ncount = 3\nmx_names = \"{mx_names}\"\n\
         capacity = {{ {capacity} }}\n"
    ))
}

#[test]
fn dns_sends_every_domain_of_a_provider_to_its_one_address() {
    for (mx_names, hosts) in [
        ("shared", ["mx.big.test", "mx.big.test", "mx.big.test"]),
        (
            "per_domain",
            [
                "b0-test.mail.big.test",
                "b1-test.mail.big.test",
                "b2-test.mail.big.test",
            ],
        ),
    ] {
        let internet = SimulatedInternet::start(&provider(mx_names, "")).unwrap();
        let big = internet.receivers()[1].addrs.clone();
        assert_eq!(big.len(), 1, "{mx_names}");
        let config = internet.resolver_config();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let resolver = volley_dns::MxResolver::new(config).unwrap();
            for (i, host) in hosts.iter().enumerate() {
                let route = resolver.resolve(&format!("b{i}.test")).await.unwrap();
                assert!(!route.is_implicit(), "{mx_names}: an MX record");
                assert_eq!(route.hosts.len(), 1, "{mx_names}");
                assert_eq!(route.hosts[0].name, *host, "{mx_names}");
                assert_eq!(route.hosts[0].addrs, vec![IpAddr::V4(big[0])], "{mx_names}");
            }
            // The ordinary domain keeps its own two addresses.
            let own = resolver.resolve("own.test").await.unwrap();
            let mut got: Vec<IpAddr> = own.addrs().collect();
            got.sort();
            let want: Vec<IpAddr> = internet.receivers()[0]
                .addrs
                .iter()
                .map(|a| IpAddr::V4(*a))
                .collect();
            assert_eq!(got, want, "{mx_names}");
        });
    }
}

#[test]
fn a_provider_limits_connections_to_all_of_its_domains_together() {
    let internet =
        SimulatedInternet::start(&provider("per_domain", "max_connections = 10")).unwrap();
    let at = |domain: usize| {
        let d = &internet.domains()[domain];
        assert!(d.name.starts_with('b'), "{}", d.name);
        SocketAddr::new(IpAddr::V4(d.hosts[0].1), internet.sink_port())
    };
    // Six to the host of b0.test and five to that of b1.test: two names,
    // one receiver, one limit of 10.
    let mut open = Vec::new();
    for i in 0..11 {
        let s = TcpStream::connect(at(if i < 6 { 1 } else { 2 })).unwrap();
        let line = first_line(&s);
        open.push((s, line));
    }
    for (i, (_, line)) in open.iter().enumerate().take(10) {
        assert!(line.starts_with("220"), "connection {i}: {line}");
    }
    assert!(open[10].1.starts_with("421 4.7.0"), "{}", open[10].1);
    let counters = internet.counters();
    assert_eq!(counters.len(), 2, "own.test and the provider");
    assert_eq!(counters[1].total.connections, 10);
    assert_eq!(counters[1].total.refused_connections, 1);
    assert_eq!(counters[1].peak_connections, 10);
    // The ordinary domain has a limit of its own, untouched.
    let own = TcpStream::connect(sink_addr(&internet, 0)).unwrap();
    assert!(first_line(&own).starts_with("220"));
}

#[test]
fn a_provider_sink_takes_mail_for_all_of_its_domains_at_one_rate() {
    let internet =
        SimulatedInternet::start(&provider("shared", "max_rate = 10.0, burst = 5.0")).unwrap();
    // Every recipient at a provider domain, over one connection to the
    // provider's address. One bucket for the three domains: 5 at once, then
    // 10/s, so 25 more take 2.5 s (a bucket per domain would let 15 through
    // at once and the rest at 30/s, in half a second).
    let started = Instant::now();
    let outcome = spawn_compose(ComposeConfig {
        target: sink_addr(&internet, 2),
        load: LoadSpec {
            messages: 30,
            connections: 1,
            ..LoadSpec::default()
        },
        mix: volley_bench::DomainMix::weighted(
            ["b0.test", "b1.test", "b2.test"]
                .iter()
                .map(|d| (d.to_string(), 1.0))
                .collect(),
        )
        .unwrap(),
        seed: 1,
        run_id: "p".into(),
        timeout: Duration::from_secs(30),
        routes: Vec::new(),
        tls: None,
    })
    .unwrap()
    .join()
    .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(outcome.summary.accepted, 30, "{:?}", outcome.summary);
    assert!(outcome.summary.refused_transient > 0, "never throttled");
    assert!(elapsed >= Duration::from_millis(2200), "{elapsed:?}");
    let c = &internet.counters()[1].total;
    assert_eq!(c.accepted, 30);
    assert!(c.rate_limited > 0);
    let deliveries = internet.deliveries();
    let mut domains: Vec<&str> = deliveries.iter().map(|d| d.domain.as_str()).collect();
    domains.sort_unstable();
    domains.dedup();
    assert_eq!(domains, vec!["b0.test", "b1.test", "b2.test"]);
    for d in &deliveries {
        assert!(d.recipient.ends_with(&format!("@{}", d.domain)), "{d:?}");
    }
    assert!(internet.accounting(&outcome.sent).is_clean());
    // The provider is one receiver, so a capacity change names it.
    assert!(internet.set_capacity("big", Default::default()));
    assert!(!internet.set_capacity("b0.test", Default::default()));
}

#[test]
fn a_receiver_that_is_down_resets_connections_until_it_comes_back() {
    let internet = SimulatedInternet::start(&one_domain("down = true")).unwrap();
    let addr = sink_addr(&internet, 0);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    // A reset reads as an error, or at best as an end with no greeting.
    match std::io::Read::read(&mut s, &mut buf) {
        Ok(n) => assert_eq!(n, 0, "a greeting from a host that is down"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert_eq!(internet.counters()[0].total.reset_connections, 1);
    assert_eq!(internet.counters()[0].total.connections, 0);
    assert!(internet.set_capacity("a.test", volley_bench::Capacity::default()));
    assert!(first_line(&TcpStream::connect(addr).unwrap()).starts_with("220"));
}

#[test]
fn a_dns_outage_leaves_the_domains_queries_unanswered_until_it_ends() {
    let s =
        scenario("name = \"t\"\n[[domain]]\nname = \"a.test\"\n[[domain]]\nname = \"b.test\"\n");
    let internet = SimulatedInternet::start(&s).unwrap();
    assert!(internet.set_dns_outage("A.test", true));
    assert!(!internet.set_dns_outage("nowhere.test", true));
    let mut config = internet.resolver_config();
    config.timeout = Duration::from_millis(300);
    config.attempts = 1;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let resolver = volley_dns::MxResolver::new(config.clone()).unwrap();
        let started = Instant::now();
        assert!(resolver.resolve("a.test").await.is_err());
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(resolver.resolve("b.test").await.is_ok());
        internet.set_dns_outage("a.test", false);
        // A fresh resolver: the failure above may be cached for a while.
        let fresh = volley_dns::MxResolver::new(config).unwrap();
        assert!(fresh.resolve("a.test").await.is_ok());
    });
}
