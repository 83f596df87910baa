//! Ingest: Composers hand Volley their messages over SMTP or LMTP.
//!
//! The accept loop admits a connection (trusted network, connection limits
//! in total and per client address) before a session starts; the session
//! drives volley-smtp's sans-IO [`Server`](volley_smtp::Server). A bad or
//! abusive session only ever harms itself: every limit has a precise reply.

mod held;
mod relay;
mod session;

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;

use crate::config::ListenerConfig;
use crate::shard::{Shard, Shared};
use crate::transport::{Conn, Listener};

/// A session's place in the connection limits; released on drop.
pub(crate) struct Admission {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.ingest_total.fetch_sub(1, Ordering::Relaxed);
        self.shared
            .counters
            .ingest_sessions
            .fetch_sub(1, Ordering::Relaxed);
        let mut map = self.shared.ingest_per_ip.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Why a connection is refused before its session starts.
enum Refusal {
    Untrusted,
    TooMany,
    TooManyFromIp,
}

fn admit(shared: &Arc<Shared>, ip: IpAddr) -> Result<Admission, Refusal> {
    let config = shared.config.load();
    if !config.ingest.is_trusted(ip) {
        return Err(Refusal::Untrusted);
    }
    let mut map = shared.ingest_per_ip.lock();
    if shared.ingest_total.load(Ordering::Relaxed) >= config.ingest.max_connections {
        return Err(Refusal::TooMany);
    }
    let n = map.entry(ip).or_insert(0);
    if *n >= config.ingest.max_connections_per_ip {
        return Err(Refusal::TooManyFromIp);
    }
    *n += 1;
    shared.ingest_total.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .ingest_sessions
        .fetch_add(1, Ordering::Relaxed);
    Ok(Admission {
        shared: shared.clone(),
        ip,
    })
}

/// Accepts connections on one listener until the shard stops.
pub(crate) async fn accept_loop(shard: Rc<Shard>, listener: Rc<Listener>, lc: ListenerConfig) {
    loop {
        let conn = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                if shard.draining.get() || *shard.shared.stop.borrow() {
                    return;
                }
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(shard = shard.index, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = conn.peer().ip();
        match admit(&shard.shared, ip) {
            Ok(admission) => {
                let this = shard.clone();
                let lc = lc.clone();
                shard.spawn_task(session::run(this, conn, lc, admission));
            }
            Err(why) => {
                let hostname = shard.shared.config.load().hostname.clone();
                let line = match why {
                    Refusal::Untrusted => format!(
                        "554 5.7.1 {hostname} does not relay for {ip}: not a trusted network\r\n"
                    ),
                    Refusal::TooMany => {
                        format!("421 4.7.0 {hostname} too many connections, try again later\r\n")
                    }
                    Refusal::TooManyFromIp => format!(
                        "421 4.7.0 {hostname} too many connections from {ip}, try again later\r\n"
                    ),
                };
                tokio_uring::spawn(refuse(conn, line));
            }
        }
    }
}

/// Says why, then closes.
async fn refuse(mut conn: Conn, line: String) {
    let _ = conn
        .write_all(vec![Bytes::from(line)], Duration::from_secs(5))
        .await;
    conn.shutdown();
}
