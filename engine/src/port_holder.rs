//! Who holds a listening address, for the message that refuses to start
//! on it (the probe itself is `transport::probe_free`).
//!
//! Looked up the way `ss -ltnp` does: the kernel's socket tables give the
//! listening socket's inode, and each process's open files show who has
//! it. Another user's processes are not visible without privileges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Who listens on `addr`, as `pid 1234 (volley)`, when this user may see it.
pub(crate) fn holder_of(addr: SocketAddr) -> Option<String> {
    let mut inodes = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(table) = std::fs::read_to_string(file) {
            inodes.extend(listening_inodes(&table, v6, addr));
        }
    }
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue; // another user's process
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        if holds {
            let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            return Some(format!("pid {pid} ({})", name.trim()));
        }
    }
    None
}

/// The socket inodes in a `/proc/net/tcp{,6}` table that listen on `addr`'s
/// port at `addr`'s address or at the wildcard (either side).
fn listening_inodes(table: &str, v6: bool, addr: SocketAddr) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            if *state != LISTEN {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = if v6 { hex_v6(ip)? } else { hex_v4(ip)? };
            let overlaps = ip == addr.ip() || ip.is_unspecified() || addr.ip().is_unspecified();
            (port == addr.port() && overlaps)
                .then(|| inode.parse().ok())
                .flatten()
        })
        .collect()
}

/// An IPv4 address as the kernel prints it: one 32-bit word in host order.
fn hex_v4(hex: &str) -> Option<IpAddr> {
    let word = u32::from_str_radix(hex, 16).ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(word.to_ne_bytes())))
}

/// An IPv6 address as the kernel prints it: four 32-bit words, each in
/// host order. A v4-mapped one is given as IPv4.
fn hex_v6(hex: &str) -> Option<IpAddr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let v6 = Ipv6Addr::from(bytes);
    Some(
        v6.to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two lines of a little-endian host's /proc/net/tcp: a listener on
    // 127.0.0.1:2525 (inode 4242) and a connection from that port.
    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:09DD 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:09DD 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    #[cfg(target_endian = "little")]
    fn finds_the_listener_on_the_address_or_the_wildcard() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(listening_inodes(TABLE, false, at("127.0.0.1:2525")), [4242]);
        assert_eq!(listening_inodes(TABLE, false, at("0.0.0.0:2525")), [4242]);
        assert!(listening_inodes(TABLE, false, at("127.0.0.2:2525")).is_empty());
        assert!(listening_inodes(TABLE, false, at("127.0.0.1:2526")).is_empty());
    }

    #[test]
    fn a_listening_socket_is_found_with_its_process() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let holder = holder_of(addr).expect("our own socket is visible to us");
        assert!(
            holder.starts_with(&format!("pid {} (", std::process::id())),
            "{holder}"
        );
        drop(held);
        assert_eq!(holder_of(addr), None);
    }
}
