//! What goes into a client session (transactions) and what comes out of it
//! (events, per-recipient outcomes, typed failures).

use bytes::Bytes;

use super::capabilities::Capabilities;
use crate::command::BodyType;
use crate::reply::{Reply, ReplyClass};
use crate::reply_parser::ReplyError;

/// One message to deliver over the session: an envelope and a shared body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The MAIL FROM address without angle brackets; empty for a null sender.
    pub reverse_path: String,
    /// The RCPT TO addresses without angle brackets, in order.
    pub recipients: Vec<String>,
    /// The unstuffed message with CRLF line ends (a final CRLF may be
    /// missing). Shared: the client only slices it, never copies it.
    pub body: Bytes,
    /// The BODY the Composer declared (RFC 6152, RFC 3030), passed on to
    /// a server that offers it. 8-bit content for a server without
    /// 8BITMIME, and binary content for one without BINARYMIME and
    /// CHUNKING, fail at once with 554 5.6.3: Volley does not convert.
    /// None: not declared (7-bit, or the Composer did not say).
    pub body_type: Option<BodyType>,
}

/// The fate of one recipient in one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// The server took responsibility for the message (2yz after the data).
    Delivered,
    /// Refused for now (4yz): retry later.
    TransientFailure,
    /// Refused for good (5yz): bounce.
    PermanentFailure,
}

impl DeliveryStatus {
    /// The status a final reply means: 2yz delivered, 4yz transient, anything
    /// else permanent.
    pub fn of(reply: &Reply) -> Self {
        match reply.class() {
            ReplyClass::Positive => Self::Delivered,
            ReplyClass::Transient => Self::TransientFailure,
            ReplyClass::Intermediate | ReplyClass::Permanent => Self::PermanentFailure,
        }
    }
}

/// One recipient's result: the reply that decided it and what it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    /// The address, as given in the [`Transaction`].
    pub recipient: String,
    /// The deciding reply: the MAIL reply when MAIL failed, the RCPT reply
    /// when RCPT failed, otherwise the reply after the data (DATA, BDAT, or in
    /// LMTP this recipient's own reply).
    pub reply: Reply,
    /// The classification of `reply` at that point.
    pub status: DeliveryStatus,
}

/// The result of one [`Transaction`], recipients in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionOutcome {
    /// The reverse path of the transaction.
    pub reverse_path: String,
    /// One entry per recipient of the transaction, same order.
    pub recipients: Vec<RecipientOutcome>,
}

impl TransactionOutcome {
    /// How many recipients were delivered.
    pub fn delivered(&self) -> usize {
        self.count(DeliveryStatus::Delivered)
    }

    /// How many recipients failed for now.
    pub fn transient_failures(&self) -> usize {
        self.count(DeliveryStatus::TransientFailure)
    }

    /// How many recipients failed for good.
    pub fn permanent_failures(&self) -> usize {
        self.count(DeliveryStatus::PermanentFailure)
    }

    fn count(&self, status: DeliveryStatus) -> usize {
        self.recipients
            .iter()
            .filter(|r| r.status == status)
            .count()
    }
}

/// Where the session stood when something happened: which reply it awaited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The 220 greeting.
    Greeting,
    /// The reply to EHLO, HELO or LHLO.
    Hello,
    /// The reply to STARTTLS, or the TLS handshake after it.
    StartTls,
    /// The reply to MAIL FROM.
    Mail,
    /// The reply to a RCPT TO.
    Rcpt,
    /// The reply to DATA (354 expected).
    Data,
    /// The reply after the body (end of DATA, or BDAT LAST).
    Body,
    /// The reply to RSET.
    Rset,
    /// The reply to QUIT.
    Quit,
    /// Nothing: the session is idle between transactions.
    Idle,
}

/// Why a session ended before QUIT. The unfinished transactions come back in
/// [`ClientEvent::Failed`]; this says whether retrying them soon makes sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The greeting was 4yz or 5yz (e.g. 554: no service here).
    #[error("greeting refused: {reply}")]
    GreetingRejected {
        /// The greeting.
        reply: Reply,
    },
    /// EHLO and HELO (or LHLO) were refused.
    #[error("hello refused: {reply}")]
    HelloRejected {
        /// The last refusal.
        reply: Reply,
    },
    /// The server sent 421: it is closing the connection.
    #[error("server closing the session while awaiting {stage:?}: {reply}")]
    ServiceClosing {
        /// What the client was waiting for.
        stage: Stage,
        /// The 421 reply.
        reply: Reply,
    },
    /// RSET was refused: the server's state is unknown.
    #[error("RSET refused: {reply}")]
    RsetRejected {
        /// The refusal.
        reply: Reply,
    },
    /// The server's bytes are not SMTP replies.
    #[error("malformed reply while awaiting {stage:?}: {source}")]
    MalformedReply {
        /// What the client was waiting for.
        stage: Stage,
        /// What is wrong with the bytes.
        source: ReplyError,
    },
    /// A reply code that makes no sense for the command it answers (e.g. 354
    /// to RCPT), or a reply when none was due.
    #[error("unexpected reply while awaiting {stage:?}: {reply}")]
    UnexpectedReply {
        /// What the client was waiting for.
        stage: Stage,
        /// The reply.
        reply: Reply,
    },
    /// The connection ended before the session did.
    #[error("connection closed while awaiting {stage:?}")]
    ConnectionClosed {
        /// What the client was waiting for.
        stage: Stage,
    },
    /// The engine's timer for the awaited reply ran out.
    #[error("timed out awaiting {stage:?}")]
    TimedOut {
        /// What the client was waiting for.
        stage: Stage,
    },
}

impl ClientError {
    /// True when the recipients may well succeed later (another MX host,
    /// another time): everything but a 5yz greeting or hello refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::GreetingRejected { reply } | Self::HelloRejected { reply } => {
                reply.is_transient()
            }
            _ => true,
        }
    }

    /// The opposite of [`is_transient`](Self::is_transient).
    pub fn is_permanent(&self) -> bool {
        !self.is_transient()
    }

    /// The stage at which the session failed.
    pub fn stage(&self) -> Stage {
        match self {
            Self::GreetingRejected { .. } => Stage::Greeting,
            Self::HelloRejected { .. } => Stage::Hello,
            Self::RsetRejected { .. } => Stage::Rset,
            Self::ServiceClosing { stage, .. }
            | Self::MalformedReply { stage, .. }
            | Self::UnexpectedReply { stage, .. }
            | Self::ConnectionClosed { stage }
            | Self::TimedOut { stage } => *stage,
        }
    }
}

/// What a client session tells the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Greeting and hello done: transactions can flow. Comes once.
    Ready {
        /// What the server offers.
        capabilities: Capabilities,
    },
    /// The server answered STARTTLS with 220: run the TLS handshake on
    /// the connection, then call
    /// [`Client::tls_established`](crate::Client::tls_established) (the
    /// session greets again inside TLS), or end the session when the
    /// handshake fails.
    StartTls,
    /// The server offered STARTTLS and then refused it (e.g. `454 4.7.0`).
    /// The session goes on in clear text: [`ClientEvent::Ready`] follows,
    /// unless the engine's policy ends the session instead.
    StartTlsRefused {
        /// The refusal.
        reply: Reply,
    },
    /// A transaction finished with a result per recipient.
    TransactionDone(TransactionOutcome),
    /// QUIT was answered (or the server closed after QUIT): a clean end.
    Closed,
    /// The session is over before QUIT. Close the connection after writing
    /// any pending output (it may hold a courtesy QUIT).
    Failed {
        /// Why.
        error: ClientError,
        /// Transactions whose outcome is unknown (the one in flight, then
        /// those not started), to be tried again elsewhere or later. A body
        /// already sent may have been accepted before the failure (RFC 1047):
        /// retrying risks a duplicate, never a loss.
        unfinished: Vec<Transaction>,
    },
}
