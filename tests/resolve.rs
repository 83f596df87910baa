//! `volley resolve` against the test DNS server.

use std::net::IpAddr;
use std::process::Command;

use volley_dns::{TestDnsServer, TestZone};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn resolve_prints_routes_and_outcomes() {
    let zone = TestZone::new()
        .mx("a.test", [(20, "backup.a.test"), (10, "mx.a.test")])
        .host("mx.a.test", [ip("127.0.0.2")])
        .host("backup.a.test", [ip("127.0.0.3")])
        .null_mx("nullmx.test");
    let server = TestDnsServer::start(zone).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args([
            "resolve",
            "--nameserver",
            &server.addr().to_string(),
            "--timeout",
            "2s",
        ])
        .args(["a.test", "nullmx.test", "nosuch.test"])
        // Common in shells: a domain without a route must not print one.
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "two domains have no route");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "a.test: MX (ttl 300s)", "{stdout}");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["10", "mx.a.test", "[127.0.0.2]"]
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["20", "backup.a.test", "[127.0.0.3]"]
    );
    assert!(
        lines[3].starts_with("nullmx.test: permanent failure (5.1.10)"),
        "{stdout}"
    );
    assert!(
        lines[4].starts_with("nosuch.test: permanent failure (5.1.2)"),
        "{stdout}"
    );
    assert!(stderr.contains("2 of 3 domains have no route"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
}
