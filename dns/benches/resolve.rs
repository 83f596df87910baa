//! Resolver benchmarks (figures, not pass/fail tests), against the in-process
//! test DNS server on 127.0.0.1:
//!
//! 1. cached lookups per second on one thread, Volley's per-shard cache
//!    against hickory-resolver's own cache;
//! 2. cold resolution of many distinct domains, all started at once, with a
//!    simulated nameserver latency.
//!
//! `cargo bench -p volley-dns --bench resolve [-- DOMAINS LATENCY_MS]`
//! (defaults: 10000 domains, 20 ms).

use std::hint::black_box;
use std::time::{Duration, Instant};

use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use volley_dns::{MxResolver, ResolverConfig, TestDnsServer, TestZone};

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let domains: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let latency_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, cached());
    let latency = Duration::from_millis(latency_ms);
    let distinct = TestZone::generated("cold.test", domains, 1, domains).latency(latency);
    local.block_on(
        &rt,
        cold("1 MX per domain, every MX host distinct", distinct, domains),
    );
    let shared = TestZone::generated("cold.test", domains, 2, 200).latency(latency);
    local.block_on(
        &rt,
        cold("2 MX per domain from a pool of 200 hosts", shared, domains),
    );
}

fn config(server: &TestDnsServer) -> ResolverConfig {
    ResolverConfig {
        min_ttl: Duration::from_secs(3600),
        ..ResolverConfig::with_nameserver(server.addr())
    }
}

async fn cached() {
    const NAMES: usize = 1000;
    const ITERS: usize = 20_000_000;
    let server =
        TestDnsServer::start(TestZone::generated("warm.test", NAMES, 2, 50)).expect("server");
    let names: Vec<String> = (0..NAMES).map(|i| format!("d{i}.warm.test")).collect();
    let resolver = MxResolver::new(config(&server)).expect("resolver");
    resolver.prefetch(names.iter().map(String::as_str));
    while resolver.in_flight() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let started = Instant::now();
    let mut hosts = 0;
    for i in 0..ITERS {
        let route = resolver
            .resolve(black_box(&names[i % NAMES]))
            .await
            .expect("cached");
        hosts += route.hosts.len();
    }
    let secs = started.elapsed().as_secs_f64();
    black_box(hosts);
    println!(
        "cached, MxResolver::resolve: {ITERS} lookups of {NAMES} domains in {secs:.2} s = {:.0} lookups/s",
        ITERS as f64 / secs
    );

    let now = Instant::now();
    let started = Instant::now();
    let mut found = 0;
    for i in 0..ITERS {
        found += usize::from(resolver.cached(black_box(&names[i % NAMES]), now).is_some());
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(found, ITERS);
    println!(
        "cached, MxResolver::cached:  {ITERS} lookups in {secs:.2} s = {:.0} lookups/s",
        ITERS as f64 / secs
    );

    // hickory-resolver's own cache, same server, same names: MX only (ours
    // also holds the MX hosts' addresses).
    const HICKORY_ITERS: usize = 2_000_000;
    let mut conn = ConnectionConfig::udp();
    conn.port = server.addr().port();
    let ns = NameServerConfig::new(server.addr().ip(), true, vec![conn]);
    let mut opts = ResolverOpts::default();
    opts.cache_size = 10_000;
    opts.positive_min_ttl = Some(Duration::from_secs(3600));
    let hickory = Resolver::builder_with_config(
        HickoryConfig::from_parts(None, vec![], vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .expect("hickory resolver");
    let fqdns: Vec<String> = names.iter().map(|n| format!("{n}.")).collect();
    for n in &fqdns {
        hickory.mx_lookup(n.as_str()).await.expect("warm");
    }
    let queries = server.queries();
    let started = Instant::now();
    for i in 0..HICKORY_ITERS {
        let lookup = hickory
            .mx_lookup(black_box(fqdns[i % NAMES].as_str()))
            .await
            .expect("cached");
        black_box(lookup);
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(server.queries(), queries, "hickory went to the server");
    println!(
        "cached, hickory mx_lookup:   {HICKORY_ITERS} lookups in {secs:.2} s = {:.0} lookups/s",
        HICKORY_ITERS as f64 / secs
    );
}

async fn cold(label: &str, zone: TestZone, domains: usize) {
    let server = TestDnsServer::start(zone).expect("server");
    let resolver = MxResolver::new(config(&server)).expect("resolver");
    let started = Instant::now();
    let tasks: Vec<_> = (0..domains)
        .map(|i| {
            let r = resolver.clone();
            tokio::task::spawn_local(
                async move { r.resolve(&format!("d{i}.cold.test")).await.is_ok() },
            )
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.expect("task"));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "cold, {label}: {domains} domains ({ok} resolved) in {secs:.2} s = {:.0} domains/s, {} queries",
        domains as f64 / secs,
        server.queries()
    );
}
