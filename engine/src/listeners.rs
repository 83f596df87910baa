//! Binding the ingest listeners: each one once per shard on one port
//! (SO_REUSEPORT, so the kernel spreads connections over the shards),
//! after making sure nobody else listens there. Used at start and by a
//! reload that adds a listener.

use std::net::{SocketAddr, TcpListener};

use crate::config::ListenerConfig;
use crate::port_holder;
use crate::transport::{bind_reuseport, probe_free};

/// How long a listening socket that no process holds may keep `addr`
/// before Volley gives up: a process killed with its sockets still in an
/// io_uring ring leaves them listening until the kernel has torn the ring
/// down, which a restart right after a crash runs into.
const ORPHANED_LISTENER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Someone already listens on the address (another Volley, say, which
    /// SO_REUSEPORT would otherwise let share its connections).
    #[error("cannot listen on {addr}: already in use by {holder}")]
    Held {
        /// The address.
        addr: SocketAddr,
        /// Who holds it, as far as this user can see.
        holder: String,
    },
}

/// One listener that Volley runs: as configured, and where it is bound
/// (the port a configured port of 0 got).
#[derive(Debug, Clone)]
pub(crate) struct Running {
    pub(crate) config: ListenerConfig,
    pub(crate) addr: SocketAddr,
}

/// A listener bound for every shard, not yet handed to them.
pub(crate) struct Bound {
    pub(crate) running: Running,
    /// One socket per shard, in shard order.
    pub(crate) sockets: Vec<TcpListener>,
}

/// Binds `config` once for each of `shards`. An address Volley already
/// listens on itself (`ours`: a listener a reload changes in place) is
/// not refused.
pub(crate) fn bind(
    config: &ListenerConfig,
    shards: usize,
    ours: &[SocketAddr],
) -> Result<Bound, BindError> {
    let wanted = config.address;
    if !ours.contains(&wanted) {
        refuse_if_held(wanted)?;
    }
    let listen = |addr: SocketAddr| {
        bind_reuseport(addr).map_err(|source| BindError::Listen { addr, source })
    };
    let first = listen(wanted)?;
    let addr = first.local_addr().map_err(|source| BindError::Listen {
        addr: wanted,
        source,
    })?;
    let mut sockets = vec![first];
    for _ in 1..shards {
        sockets.push(listen(addr)?);
    }
    Ok(Bound {
        running: Running {
            config: config.clone(),
            addr,
        },
        sockets,
    })
}

/// Fails when anyone already listens on `addr`, naming who.
fn refuse_if_held(addr: SocketAddr) -> Result<(), BindError> {
    let deadline = std::time::Instant::now() + ORPHANED_LISTENER_WAIT;
    loop {
        match probe_free(addr) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if let Some(holder) = port_holder::holder_of(addr) {
                    return Err(BindError::Held { addr, holder });
                }
                if std::time::Instant::now() >= deadline {
                    return Err(BindError::Held {
                        addr,
                        holder: "a process this user cannot see".into(),
                    });
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(source) => return Err(BindError::Listen { addr, source }),
        }
    }
}
