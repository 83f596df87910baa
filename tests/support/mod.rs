//! Shared pieces of the engine's end-to-end tests: a simulated internet
//! (test DNS server + MX sinks on 127.0.0.x, all on one port), a Composer,
//! and waiting with a deadline.

pub mod composer;
pub mod policy_server;
pub mod sink;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use volley_dns::{TestDnsServer, TestZone};
use volley_engine::{AckMode, Config, Engine, ListenerConfig, Protocol, Stats};

use sink::{Received, Script, Sink};

/// The address of MX host number `k` in generated zones.
pub fn mx_ip(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 2 + (k % 250) as u8)
}

pub struct World {
    pub dns: TestDnsServer,
    pub sinks: Vec<Sink>,
    pub port: u16,
    pub log: PathBuf,
}

impl World {
    /// A DNS server for `zone` and one sink per address in `ips`, all on
    /// one port; `script(k)` sets up sink `k`.
    pub fn new(zone: TestZone, ips: &[Ipv4Addr], script: impl Fn(usize) -> Script) -> World {
        let dns = TestDnsServer::start(zone).expect("test DNS server");
        for _ in 0..50 {
            let first = Sink::start(ips[0], 0, script(0)).expect("sink");
            let port = first.addr.port();
            let mut sinks = vec![first];
            let ok = ips[1..].iter().enumerate().all(|(i, ip)| {
                match Sink::start(*ip, port, script(i + 1)) {
                    Ok(s) => {
                        sinks.push(s);
                        true
                    }
                    Err(_) => false,
                }
            });
            if ok {
                return World {
                    dns,
                    sinks,
                    port,
                    log: temp_path("delivery.log"),
                };
            }
        }
        panic!("no port free on every sink address");
    }

    /// `domains` domains d{i}.test spread over `hosts` MX sinks.
    pub fn generated(domains: usize, hosts: usize, script: impl Fn(usize) -> Script) -> World {
        let zone = TestZone::generated("test", domains, 1, hosts);
        let ips: Vec<Ipv4Addr> = (0..hosts).map(mx_ip).collect();
        World::new(zone, &ips, script)
    }

    /// An engine configuration for this world: 2 shards, a listener on a
    /// free port, delivery to the sinks' port, short retries.
    pub fn config(&self) -> Config {
        let mut c = Config {
            shards: 2,
            delivery_port: self.port,
            delivery_log: Some(self.log.clone()),
            listeners: vec![ListenerConfig {
                address: "127.0.0.1:0".parse().unwrap(),
                ..ListenerConfig::default()
            }],
            resolver: self.dns.resolver_config(),
            ..Config::default()
        };
        c.general_queue.retry_schedule = vec![Duration::from_millis(200)];
        c.general_queue.host_down_for = Duration::from_millis(300);
        c.general_queue.idle_timeout = Duration::from_millis(500);
        c.general_queue.connect_timeout = Duration::from_secs(2);
        // Tests run side by side: each asks for the admin API when it
        // tests it, on a port of its own.
        c.admin.enabled = false;
        c
    }

    /// [`World::config`] with the admin server on, on a free loopback port
    /// (`Engine::admin_addr` says which).
    pub fn config_with_admin(&self) -> Config {
        let mut c = self.config();
        c.admin.enabled = true;
        c.admin.listen = "127.0.0.1:0".parse().unwrap();
        c
    }

    /// [`World::config`] with its one listener speaking `protocol` and
    /// acknowledging in `ack` mode.
    pub fn config_with_listener(&self, protocol: Protocol, ack: AckMode) -> Config {
        let mut c = self.config();
        c.listeners[0].protocol = protocol;
        c.listeners[0].ack = ack;
        c
    }

    pub fn received(&self) -> Vec<Received> {
        self.sinks
            .iter()
            .flat_map(|s| s.received.lock().clone())
            .collect()
    }

    pub fn received_count(&self) -> usize {
        self.sinks.iter().map(|s| s.count()).sum()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Taken by the tests that run whole processes of Volley and the bench at
/// full speed (a bench run, the short soak, the three-node cluster), so
/// that no two of them share the machine's two cores: each has a time or
/// a share of capacity to meet (the 10,000-message relay too). The guard is held for the whole test; a
/// test that panicked while holding it does not block the others.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn temp_path(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("volley-e2e-{}-{n}-{name}", std::process::id()))
}

/// Waits (10 s at most, 30 s for big runs) until `cond` holds.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn wait_stats(engine: &Engine, what: &str, cond: impl Fn(&Stats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = engine.stats();
        if cond(&s) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `volley check-config FILE`, run to the end.
pub fn check_config(file: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_volley"))
        .arg("check-config")
        .arg(file)
        .output()
        .expect("volley runs")
}

/// Runs a Python program with `args` as `sys.argv[1:]`; returns its
/// stdout, failing the test with its stderr when it fails.
pub fn python(program: &str, args: &[&dyn std::fmt::Display]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(program)
        .args(args.iter().map(|a| a.to_string()))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The delivery log as JSON values.
pub fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The statuses logged for `rcpt`, in order.
pub fn statuses(log: &[serde_json::Value], rcpt: &str) -> Vec<String> {
    log.iter()
        .filter(|l| l["recipient"] == rcpt)
        .map(|l| l["status"].as_str().unwrap().to_string())
        .collect()
}

/// A TCP connection to `to` from the loopback address `local` (any port),
/// reading with `read_timeout`: how the tests speak as clients of
/// different addresses.
pub fn connect_from(
    local: [u8; 4],
    to: std::net::SocketAddr,
    read_timeout: Duration,
) -> std::io::Result<std::net::TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    s.bind(&std::net::SocketAddr::from((local, 0)).into())?;
    s.connect(&to.into())?;
    let s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(read_timeout))?;
    Ok(s)
}
