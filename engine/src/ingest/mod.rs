//! Ingest: Composers hand Volley their messages over SMTP or LMTP.
//!
//! The accept loop admits a connection (connection limits in total and,
//! for clients outside the trusted networks, per address) before a
//! session starts; the session
//! drives volley-smtp's sans-IO [`Server`](volley_smtp::Server). A bad or
//! abusive session only ever harms itself: every limit has a precise reply.

mod admission;
mod held;
pub(crate) mod received;
pub(crate) mod relay;
mod session;

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use admission::{Admission, Refusal, admit};

use crate::config::ListenerConfig;
use crate::context::ShardCtx;
use crate::transport::{Conn, Listener};

/// Accepts connections on one listener until the shard stops.
pub(crate) async fn accept_loop(shard: Rc<ShardCtx>, listener: Rc<Listener>, lc: ListenerConfig) {
    loop {
        let conn = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                if shard.is_draining()
                    || *shard.shared.stop.borrow()
                    || *shard.shared.drain.borrow()
                {
                    return;
                }
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(shard = shard.index, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = conn.peer().ip();
        let hostname = || shard.shared.config.load().hostname.clone();
        // With AUTH users (and a certificate, which AUTH needs), any
        // client may open a session: MAIL waits for its AUTH.
        let auth_offered = {
            let config = shard.shared.config.load();
            !config.users.is_empty() && shard.shared.tls.load().server.is_some()
        };
        match admit(&shard.shared, shard.index, ip) {
            Ok(admission) if admission.trusted || auth_offered => {
                let this = shard.clone();
                let lc = lc.clone();
                shard.spawn_task(session::run(this, conn, lc, admission));
            }
            Ok(admission) => {
                let hostname = hostname();
                let line = format!(
                    "554 5.7.1 {hostname} does not relay for {ip}: not a trusted network\r\n"
                );
                tokio_uring::spawn(refuse_until_quit(conn, line, hostname, admission));
            }
            Err(Refusal::TooMany) => {
                let line = format!(
                    "421 4.7.0 {} too many connections, try again later\r\n",
                    hostname()
                );
                tokio_uring::spawn(refuse(conn, line));
            }
            Err(Refusal::TooManyFromIp) => {
                let line = format!(
                    "421 4.7.0 {} too many connections from {ip}, try again later\r\n",
                    hostname()
                );
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

/// How long a session refused with a 554 greeting waits for QUIT.
const REFUSED_QUIT_WAIT: Duration = Duration::from_secs(10);

/// The longest command line read after a 554 greeting; longer ones are
/// answered once their end arrives, their bytes dropped.
const REFUSED_LINE_MAX: usize = 1024;

/// A 554 greeting, then, as RFC 5321 3.1 asks, a wait for QUIT (answered
/// 221) with every other command answered `503 5.5.1`, for
/// [`REFUSED_QUIT_WAIT`] at most in all; then the connection closes and
/// its place in the connection limits is given back.
async fn refuse_until_quit(mut conn: Conn, line: String, hostname: String, _place: Admission) {
    let t = Duration::from_secs(5);
    if conn.write_all(vec![Bytes::from(line)], t).await.is_err() {
        conn.shutdown();
        return;
    }
    let deadline = tokio::time::Instant::now() + REFUSED_QUIT_WAIT;
    let mut buf = bytes::BytesMut::with_capacity(REFUSED_LINE_MAX);
    'session: loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let (r, b) = conn.read(buf, 512, left).await;
        buf = b;
        if r.is_err() {
            break;
        }
        while let Some(lf) = memchr::memchr(b'\n', &buf) {
            let cmd = buf.split_to(lf + 1);
            let quit = cmd.len() >= 4 && cmd[..4].eq_ignore_ascii_case(b"QUIT");
            let reply = if quit {
                format!("221 2.0.0 {hostname} closing connection\r\n")
            } else {
                "503 5.5.1 connection refused: only QUIT is accepted\r\n".to_string()
            };
            if conn.write_all(vec![Bytes::from(reply)], t).await.is_err() || quit {
                break 'session;
            }
        }
        if buf.len() > REFUSED_LINE_MAX {
            buf.clear();
        }
    }
    conn.shutdown();
}
