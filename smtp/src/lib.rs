//! SMTP (RFC 5321) and LMTP (RFC 2033) as sans-IO state machines.
//!
//! This crate has no networking code, no threads and no clock of its own: it
//! eats bytes (and, where timing matters, a `now` passed in) and hands back
//! bytes to send and events to act on. The engine's shards drive it over
//! io_uring sockets; tests drive it over plain byte slices.

mod reply;

pub use reply::{EnhancedCode, Reply, ReplyClass};
