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

#[test]
fn serve_warns_at_start_when_no_nameserver_answers() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::Duration;

    // Bound and never read: every query to it goes unanswered.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead = dead.local_addr().unwrap().to_string();
    let file = crate::support::temp_path("dead-dns.toml");
    std::fs::write(&file, "[resolver]\ntimeout = \"200ms\"\nattempts = 1\n").unwrap();
    let listen = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["serve", "--no-admin", "--config", file.to_str().unwrap()])
        .args(["--listen", &listen, "--shards", "1", "--nameserver", &dead])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let warning = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("WARN volley: no nameserver answers") => break Some(line),
            Ok(line) => seen.push(line),
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(file);
    let warning = warning.unwrap_or_else(|| panic!("no warning in {seen:#?}"));
    assert!(warning.contains(&dead), "{warning}");
}
