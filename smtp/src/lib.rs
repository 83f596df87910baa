//! SMTP (RFC 5321) and LMTP (RFC 2033) as sans-IO state machines.
//!
//! This crate has no networking code, no threads and no clock of its own: it
//! eats bytes (and, where timing matters, a `now` passed in) and hands back
//! bytes to send and events to act on. The engine's shards drive it over
//! io_uring sockets; tests drive it over plain byte slices.

mod address;
mod client;
mod command;
mod reply;
mod reply_parser;
mod server;
mod stuffing;

pub use address::{
    AddressError, Domain, ForwardPath, Mailbox, parse_forward_path, parse_reverse_path, routing_key,
};
pub use client::{
    Capabilities, Client, ClientConfig, ClientError, ClientEvent, DeliveryStatus, RecipientOutcome,
    SendError, Stage, Transaction, TransactionOutcome,
};
pub use command::{
    BodyType, Command, CommandError, MailParams, Notify, Orcpt, RcptParams, Ret, parse_command,
    parse_mail_params, parse_rcpt_params, xtext_encode,
};
pub use reply::{EnhancedCode, Reply, ReplyClass};
pub use reply_parser::{DEFAULT_MAX_REPLY_LINE, ReplyError, ReplyParser};
pub use server::{
    AbortReason, CloseReason, Credentials, Extensions, Pending, Server, ServerConfig, ServerEvent,
    UnexpectedVerdict, Verdict,
};
pub use stuffing::{chunk_body, dot_stuff};
