//! Serves a small demonstration zone on 127.0.0.1 for a while, to try
//! `volley resolve` by hand:
//!
//! ```text
//! cargo run -p volley-dns --example test_dns_server -- 60 &
//! volley resolve --nameserver 127.0.0.1:PORT a.test implicit.test nullmx.test
//! ```

use std::net::IpAddr;
use std::time::Duration;

use volley_dns::{Fault, TestDnsServer, TestZone};

fn main() -> std::io::Result<()> {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(60);
    let ip = |s: &str| s.parse::<IpAddr>().expect("literal address");
    let zone = TestZone::new()
        .mx(
            "a.test",
            [
                (10, "mx1.a.test"),
                (10, "mx2.a.test"),
                (20, "backup.a.test"),
            ],
        )
        .host("mx1.a.test", [ip("127.0.0.2"), ip("::1")])
        .host("mx2.a.test", [ip("127.0.0.3")])
        .host("backup.a.test", [ip("127.0.0.4")])
        .host("implicit.test", [ip("127.0.0.5")])
        .null_mx("nullmx.test")
        .host("servfail.test", [ip("127.0.0.6")])
        .fault("servfail.test", Fault::ServFail)
        .host("silent.test", [ip("127.0.0.7")])
        .fault("silent.test", Fault::NoAnswer);
    let server = TestDnsServer::start(zone)?;
    println!("{}", server.addr());
    std::thread::sleep(Duration::from_secs(secs));
    println!("{} queries answered", server.queries());
    Ok(())
}
