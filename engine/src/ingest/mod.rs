//! Ingest: Composers hand Volley their messages over SMTP or LMTP.
//!
//! The accept loop admits a connection (trusted network, connection limits
//! in total and per client address) before a session starts; the session
//! drives volley-smtp's sans-IO [`Server`](volley_smtp::Server). A bad or
//! abusive session only ever harms itself: every limit has a precise reply.

mod admission;
mod held;
mod relay;
mod session;

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use admission::{Refusal, admit};

use crate::config::ListenerConfig;
use crate::context::ShardCtx;
use crate::transport::{Conn, Listener};

/// Accepts connections on one listener until the shard stops.
pub(crate) async fn accept_loop(shard: Rc<ShardCtx>, listener: Rc<Listener>, lc: ListenerConfig) {
    loop {
        let conn = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                if shard.is_draining() || *shard.shared.stop.borrow() {
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
