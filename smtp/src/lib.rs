//! SMTP (RFC 5321) and LMTP (RFC 2033) as sans-IO state machines.
//!
//! This crate has no networking code, no threads and no clock of its own: it
//! eats bytes (and, where timing matters, a `now` passed in) and hands back
//! bytes to send and events to act on. The engine's shards drive it over
//! io_uring sockets; tests drive it over plain byte slices.

mod client;
mod reply;
mod reply_parser;
mod stuffing;

pub use client::{
    Capabilities, Client, ClientConfig, ClientError, ClientEvent, DeliveryStatus, RecipientOutcome,
    SendError, Stage, Transaction, TransactionOutcome,
};
pub use reply::{EnhancedCode, Reply, ReplyClass};
pub use reply_parser::{DEFAULT_MAX_REPLY_LINE, ReplyError, ReplyParser};
pub use stuffing::{chunk_body, dot_stuff};
