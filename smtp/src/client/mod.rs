//! The delivery side: an SMTP/LMTP client session as a sans-IO state machine.
//!
//! The engine connects, then loops: bytes read go into
//! [`Client::receive`], events come out of [`Client::poll_event`], and the
//! segments in [`Client::pending_output`] go to the socket (one `writev`; the
//! body segments slice the shared message body, so nothing is copied). The
//! client never blocks and never panics on what a server sends: a broken
//! server ends the session with [`ClientEvent::Failed`], which hands back the
//! transactions whose fate is unknown.
//!
//! Expected replies sit in a queue, one entry per command sent, so pipelined
//! commands (RFC 2920) and lock-step ones share one code path: every reply
//! pops the front entry and is judged against it.

mod capabilities;
mod config;
mod outcome;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use crate::command::BodyType;
use crate::reply::{EnhancedCode, Reply, ReplyClass};
use crate::reply_parser::ReplyParser;
use crate::stuffing::{chunk_body, dot_stuff};

pub use capabilities::Capabilities;
pub use config::ClientConfig;
pub use outcome::{
    ClientError, ClientEvent, DeliveryStatus, RecipientOutcome, Stage, Transaction,
    TransactionOutcome,
};

/// Why [`Client::send`] refused a transaction; the transaction comes back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The session failed, closed, or QUIT was asked for.
    #[error("the session is over or quitting")]
    SessionOver(Transaction),
    /// An address holds a control character (CR or LF would let it inject
    /// commands).
    #[error("address {address:?} cannot go into a command line")]
    InvalidAddress {
        /// The offending address.
        address: String,
        /// The refused transaction.
        transaction: Transaction,
    },
}

impl SendError {
    /// The transaction that was not sent.
    pub fn into_transaction(self) -> Transaction {
        match self {
            Self::SessionOver(tx)
            | Self::InvalidAddress {
                transaction: tx, ..
            } => tx,
        }
    }
}

/// What the reply at the front of the queue answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Mail,
    Rcpt(usize),
    Data,
    /// The reply after the body (end of DATA, or BDAT LAST) in SMTP.
    Body,
    /// One of the per-recipient replies after the body in LMTP.
    LmtpBody,
    /// The reply to an empty body sent only because a pipelined DATA got 354
    /// with no recipient accepted (RFC 2920 3.1).
    Discard,
    Rset,
    Quit,
}

impl Expect {
    fn stage(self) -> Stage {
        match self {
            Self::Greeting => Stage::Greeting,
            Self::Ehlo | Self::Helo => Stage::Hello,
            Self::StartTls => Stage::StartTls,
            Self::Mail => Stage::Mail,
            Self::Rcpt(_) => Stage::Rcpt,
            Self::Data => Stage::Data,
            Self::Body | Self::LmtpBody | Self::Discard => Stage::Body,
            Self::Rset => Stage::Rset,
            Self::Quit => Stage::Quit,
        }
    }
}

/// The transaction in flight.
#[derive(Debug)]
struct Active {
    tx: Transaction,
    pipelined: bool,
    bdat: bool,
    mail_ok: bool,
    /// The deciding reply per recipient, once known.
    results: Vec<Option<Reply>>,
    /// Recipients whose RCPT got 2yz, in order.
    accepted: Vec<usize>,
    /// LMTP: how many per-recipient replies after the body have arrived.
    lmtp_done: usize,
}

/// One client session over one connection. See the [module docs](self).
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    parser: ReplyParser,
    capabilities: Option<Capabilities>,
    /// What the server offered before STARTTLS, kept in case it refuses.
    before_tls: Option<Capabilities>,
    /// STARTTLS was accepted: waiting for the engine's handshake.
    awaiting_handshake: bool,
    tls: bool,
    expect: VecDeque<Expect>,
    queue: VecDeque<Transaction>,
    active: Option<Active>,
    quit_requested: bool,
    /// After `Closed` or `Failed`: nothing more happens.
    over: bool,
    out: VecDeque<Bytes>,
    /// Command text not yet moved to `out`.
    cmd: BytesMut,
    /// Reused for BDAT bodies, whose size must be known before the header.
    scratch: Vec<Bytes>,
    events: VecDeque<ClientEvent>,
}

impl Client {
    /// A session on a freshly opened connection: it waits for the greeting.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            parser: ReplyParser::new(config.max_reply_line),
            config,
            capabilities: None,
            before_tls: None,
            awaiting_handshake: false,
            tls: false,
            expect: VecDeque::from([Expect::Greeting]),
            queue: VecDeque::new(),
            active: None,
            quit_requested: false,
            over: false,
            out: VecDeque::new(),
            cmd: BytesMut::with_capacity(512),
            scratch: Vec::new(),
            events: VecDeque::new(),
        }
    }

    /// Feeds bytes read from the server. Events and output follow from them.
    /// Bytes after the session ended are ignored.
    pub fn receive(&mut self, input: &[u8]) {
        if self.over {
            return;
        }
        self.parser.push(input);
        while !self.over {
            match self.parser.next_reply() {
                Ok(Some(reply)) => self.on_reply(reply),
                Ok(None) => break,
                Err(source) => {
                    let stage = self.stage();
                    self.fail(ClientError::MalformedReply { stage, source }, false);
                }
            }
        }
    }

    /// The next event, if any. Poll until `None` after every call that feeds
    /// the session.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Segments waiting to be written, in order.
    pub fn pending_output(&self) -> &VecDeque<Bytes> {
        &self.out
    }

    /// Takes every segment waiting to be written.
    pub fn take_output(&mut self) -> VecDeque<Bytes> {
        std::mem::take(&mut self.out)
    }

    /// Removes the segments waiting to be written, keeping the queue's
    /// allocation for the next ones.
    pub fn drain_output(&mut self) -> std::collections::vec_deque::Drain<'_, Bytes> {
        self.out.drain(..)
    }

    /// Queues a transaction. It starts as soon as the session is ready and the
    /// transactions before it are done (one at a time on the wire), so
    /// [`ClientEvent::TransactionDone`] events come in the order of `send`.
    pub fn send(&mut self, tx: Transaction) -> Result<(), SendError> {
        if self.over || self.quit_requested {
            return Err(SendError::SessionOver(tx));
        }
        let bad = std::iter::once(&tx.reverse_path)
            .chain(&tx.recipients)
            .find(|a| !address_fits_command(a));
        if let Some(address) = bad {
            return Err(SendError::InvalidAddress {
                address: address.clone(),
                transaction: tx,
            });
        }
        self.queue.push_back(tx);
        self.advance();
        Ok(())
    }

    /// Asks for QUIT once the queued transactions are done.
    pub fn quit(&mut self) {
        if !self.over && !self.quit_requested {
            self.quit_requested = true;
            self.advance();
        }
    }

    /// The engine saw the connection end (EOF or error). After QUIT that is a
    /// clean close; before, a failure that hands back unfinished work.
    pub fn connection_closed(&mut self) {
        if self.over {
            return;
        }
        if self.expect.front() == Some(&Expect::Quit) {
            self.close();
        } else {
            let stage = self.stage();
            self.fail(ClientError::ConnectionClosed { stage }, false);
        }
    }

    /// The engine's timer for the awaited reply (see
    /// [`awaiting`](Self::awaiting)) ran out: the session fails.
    pub fn timed_out(&mut self) {
        if !self.over {
            let stage = self.stage();
            self.fail(ClientError::TimedOut { stage }, false);
        }
    }

    /// The reply the session waits for, so the engine can pick the timeout
    /// for it (RFC 5321 4.5.3.2); `None` when idle or over.
    pub fn awaiting(&self) -> Option<Stage> {
        if self.over {
            None
        } else {
            self.expect.front().map(|e| e.stage())
        }
    }

    /// Whether the body of the transaction in flight has been put in the
    /// output. From then on a session that fails leaves the transaction's
    /// fate unknown: the server may have taken it before its reply was
    /// lost (RFC 1047). With BDAT and pipelining that happens before the
    /// reply to MAIL, so the stage a failure names does not tell it.
    pub fn body_handed_out(&self) -> bool {
        !self.over
            && self
                .expect
                .iter()
                .any(|e| matches!(e, Expect::Body | Expect::LmtpBody))
    }

    /// True when ready, with nothing in flight or queued: a pooled connection
    /// that can take a transaction at once.
    pub fn is_idle(&self) -> bool {
        !self.over
            && self.capabilities.is_some()
            && self.expect.is_empty()
            && self.queue.is_empty()
            && !self.quit_requested
    }

    /// True after `Closed` or `Failed`.
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// Whether the session runs inside TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The engine finished the TLS handshake that
    /// [`ClientEvent::StartTls`] asked for: the session greets the server
    /// again (RFC 3207 4.2: nothing learned before TLS counts).
    pub fn tls_established(&mut self) {
        if self.over || !self.awaiting_handshake {
            return;
        }
        self.awaiting_handshake = false;
        self.tls = true;
        self.before_tls = None;
        self.send_hello();
    }

    /// What the server offered, once its hello reply has arrived.
    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.capabilities.as_ref()
    }

    fn stage(&self) -> Stage {
        if self.awaiting_handshake {
            return Stage::StartTls;
        }
        self.expect.front().map_or(Stage::Idle, |e| e.stage())
    }

    fn on_reply(&mut self, reply: Reply) {
        let Some(expect) = self.expect.pop_front() else {
            let error = ClientError::UnexpectedReply {
                stage: Stage::Idle,
                reply,
            };
            return self.fail(error, false);
        };
        if expect == Expect::Quit {
            return self.close();
        }
        let class = reply.class();
        if reply.code == 421 {
            let stage = expect.stage();
            return self.fail(ClientError::ServiceClosing { stage, reply }, false);
        }
        // DATA alone wants 3yz; a 2yz there, or a 3yz anywhere else, is a
        // server out of step with the client.
        let fits = match expect {
            Expect::Data => class != ReplyClass::Positive,
            _ => class != ReplyClass::Intermediate,
        };
        if !fits {
            let stage = expect.stage();
            return self.fail(ClientError::UnexpectedReply { stage, reply }, false);
        }
        let positive = class == ReplyClass::Positive;
        match expect {
            Expect::Greeting if positive => self.send_hello(),
            Expect::Greeting => self.fail(ClientError::GreetingRejected { reply }, true),
            Expect::Ehlo if positive => {
                let caps = Capabilities::from_ehlo(&reply);
                if self.config.starttls && caps.starttls && !self.tls {
                    self.before_tls = Some(caps);
                    self.cmd.extend_from_slice(b"STARTTLS\r\n");
                    self.flush_cmd();
                    self.expect.push_back(Expect::StartTls);
                } else {
                    self.ready(caps);
                }
            }
            Expect::StartTls if positive => {
                self.awaiting_handshake = true;
                self.events.push_back(ClientEvent::StartTls);
            }
            Expect::StartTls => {
                self.events
                    .push_back(ClientEvent::StartTlsRefused { reply });
                let caps = self.before_tls.take().unwrap_or_default();
                self.ready(caps);
            }
            Expect::Ehlo if class == ReplyClass::Permanent && !self.config.lmtp => {
                let _ = write!(self.cmd, "HELO {}\r\n", self.config.helo_name);
                self.flush_cmd();
                self.expect.push_back(Expect::Helo);
            }
            Expect::Helo if positive => self.ready(Capabilities::default()),
            Expect::Ehlo | Expect::Helo => self.fail(ClientError::HelloRejected { reply }, true),
            Expect::Mail => self.on_mail(reply),
            Expect::Rcpt(i) => self.on_rcpt(i, reply),
            Expect::Data => self.on_data(reply),
            Expect::Body => self.on_body(reply),
            Expect::LmtpBody => self.on_lmtp_body(reply),
            Expect::Discard => self.finish(false),
            Expect::Rset if positive => self.advance(),
            Expect::Rset => self.fail(ClientError::RsetRejected { reply }, true),
            Expect::Quit => self.close(),
        }
    }

    fn send_hello(&mut self) {
        let verb = if self.config.lmtp { "LHLO" } else { "EHLO" };
        let _ = write!(self.cmd, "{verb} {}\r\n", self.config.helo_name);
        self.flush_cmd();
        self.expect.push_back(Expect::Ehlo);
    }

    fn ready(&mut self, capabilities: Capabilities) {
        self.capabilities = Some(capabilities.clone());
        self.events.push_back(ClientEvent::Ready { capabilities });
        self.advance();
    }

    fn on_mail(&mut self, reply: Reply) {
        let Some(a) = self.active.as_mut() else {
            return self.out_of_step(Stage::Mail, reply);
        };
        if reply.class() == ReplyClass::Positive {
            a.mail_ok = true;
            if !a.pipelined {
                self.send_rcpt(0);
            }
            return;
        }
        // Every recipient shares the MAIL failure: its class (4yz or 5yz)
        // decides their fate, not the 503s that pipelined RCPTs will get.
        for r in &mut a.results {
            *r = Some(reply.clone());
        }
        if !a.pipelined {
            self.finish(false);
        }
    }

    fn on_rcpt(&mut self, i: usize, reply: Reply) {
        let Some(a) = self.active.as_mut() else {
            return self.out_of_step(Stage::Rcpt, reply);
        };
        if a.mail_ok {
            if reply.class() == ReplyClass::Positive {
                a.accepted.push(i);
            } else if let Some(slot) = a.results.get_mut(i) {
                *slot = Some(reply);
            }
        }
        if a.pipelined {
            return;
        }
        if i + 1 < a.tx.recipients.len() {
            self.send_rcpt(i + 1);
        } else if a.accepted.is_empty() {
            // Nobody to send to: no DATA, and RSET to end the open
            // transaction that MAIL started.
            self.finish(true);
        } else {
            let bdat = a.bdat;
            self.send_body_start(bdat);
        }
    }

    fn on_data(&mut self, reply: Reply) {
        let Some(a) = self.active.as_mut() else {
            return self.out_of_step(Stage::Data, reply);
        };
        if reply.class() == ReplyClass::Intermediate {
            if a.mail_ok && !a.accepted.is_empty() {
                let body = a.tx.body.clone();
                dot_stuff(&body, &mut self.out);
                let next = self.body_reply();
                self.expect.push_back(next);
            } else {
                self.out.push_back(Bytes::from_static(b".\r\n"));
                self.expect.push_back(Expect::Discard);
            }
            return;
        }
        for &i in &a.accepted {
            a.results[i] = Some(reply.clone());
        }
        let rset = a.mail_ok;
        self.finish(rset);
    }

    fn on_body(&mut self, reply: Reply) {
        let Some(a) = self.active.as_mut() else {
            return self.out_of_step(Stage::Body, reply);
        };
        if a.mail_ok {
            for &i in &a.accepted {
                a.results[i] = Some(reply.clone());
            }
        }
        // After a refused BDAT the transaction stays open (RFC 3030 2);
        // after the end of DATA it is over either way.
        let rset = a.bdat && a.mail_ok && reply.class() != ReplyClass::Positive;
        self.finish(rset);
    }

    fn on_lmtp_body(&mut self, reply: Reply) {
        let Some(a) = self.active.as_mut() else {
            return self.out_of_step(Stage::Body, reply);
        };
        if !a.mail_ok || a.accepted.is_empty() {
            // A pipelined BDAT refused as a whole: one reply.
            let rset = a.bdat && a.mail_ok && reply.class() != ReplyClass::Positive;
            return self.finish(rset);
        }
        let i = a.accepted[a.lmtp_done];
        a.results[i] = Some(reply);
        a.lmtp_done += 1;
        if a.lmtp_done < a.accepted.len() {
            self.expect.push_front(Expect::LmtpBody);
        } else {
            self.finish(false);
        }
    }

    /// A transaction reply with no transaction: cannot happen while the
    /// expectation queue and `active` agree, but a typed failure beats a panic.
    fn out_of_step(&mut self, stage: Stage, reply: Reply) {
        self.fail(ClientError::UnexpectedReply { stage, reply }, false);
    }

    fn body_reply(&self) -> Expect {
        if self.config.lmtp {
            Expect::LmtpBody
        } else {
            Expect::Body
        }
    }

    /// Starts queued transactions, or QUIT, when nothing is in flight.
    fn advance(&mut self) {
        while !self.over && self.capabilities.is_some() && self.expect.is_empty() {
            if let Some(tx) = self.queue.pop_front() {
                self.start(tx);
            } else {
                if self.quit_requested {
                    self.cmd.extend_from_slice(b"QUIT\r\n");
                    self.flush_cmd();
                    self.expect.push_back(Expect::Quit);
                }
                return;
            }
        }
    }

    fn start(&mut self, tx: Transaction) {
        let n = tx.recipients.len();
        if n == 0 {
            self.report(tx.reverse_path, std::iter::empty());
            return;
        }
        let caps = self.capabilities.clone().unwrap_or_default();
        let pipelined = self.config.pipelining && caps.pipelining;
        let bdat = self.config.chunking && caps.chunking;
        if let Some(reply) = unsendable_body(tx.body_type, &caps, bdat) {
            self.refuse_locally(tx, reply);
            return;
        }
        let _ = write!(self.cmd, "MAIL FROM:<{}>", tx.reverse_path);
        if caps.size {
            let _ = write!(self.cmd, " SIZE={}", tx.body.len());
        }
        match tx.body_type {
            Some(BodyType::EightBitMime) => self.cmd.extend_from_slice(b" BODY=8BITMIME"),
            Some(BodyType::BinaryMime) => self.cmd.extend_from_slice(b" BODY=BINARYMIME"),
            // BODY=7BIT is for servers that know BODY= (RFC 6152 2).
            Some(BodyType::SevenBit) if caps.eight_bit_mime => {
                self.cmd.extend_from_slice(b" BODY=7BIT")
            }
            Some(BodyType::SevenBit) | None => {}
        }
        let utf8 = !tx.reverse_path.is_ascii() || tx.recipients.iter().any(|r| !r.is_ascii());
        if utf8 && caps.smtputf8 {
            self.cmd.extend_from_slice(b" SMTPUTF8");
        }
        self.cmd.extend_from_slice(b"\r\n");
        self.expect.push_back(Expect::Mail);
        self.active = Some(Active {
            tx,
            pipelined,
            bdat,
            mail_ok: false,
            results: vec![None; n],
            accepted: Vec::with_capacity(n),
            lmtp_done: 0,
        });
        if !pipelined {
            self.flush_cmd();
            return;
        }
        for i in 0..n {
            self.write_rcpt(i);
        }
        self.send_body_start(bdat);
    }

    fn write_rcpt(&mut self, i: usize) {
        if let Some(rcpt) = self.active.as_ref().and_then(|a| a.tx.recipients.get(i)) {
            let _ = write!(self.cmd, "RCPT TO:<{rcpt}>\r\n");
            self.expect.push_back(Expect::Rcpt(i));
        }
    }

    fn send_rcpt(&mut self, i: usize) {
        self.write_rcpt(i);
        self.flush_cmd();
    }

    /// After the recipients: the whole body in one BDAT chunk, or DATA (the
    /// body follows its 354), after any commands already written.
    fn send_body_start(&mut self, bdat: bool) {
        if bdat {
            self.send_bdat();
        } else {
            self.cmd.extend_from_slice(b"DATA\r\n");
            self.flush_cmd();
            self.expect.push_back(Expect::Data);
        }
    }

    /// Every recipient of `tx` fails with `reply`, which never reached the
    /// server; the session goes on with the next transaction.
    fn refuse_locally(&mut self, tx: Transaction, reply: Reply) {
        let recipients = tx.recipients.into_iter().map(|r| (r, reply.clone()));
        self.report(tx.reverse_path, recipients);
    }

    /// A transaction's outcome: each recipient with the reply that decided it.
    fn report(&mut self, reverse_path: String, recipients: impl Iterator<Item = (String, Reply)>) {
        let recipients = recipients
            .map(|(recipient, reply)| RecipientOutcome {
                recipient,
                status: DeliveryStatus::of(&reply),
                reply,
            })
            .collect();
        self.events
            .push_back(ClientEvent::TransactionDone(TransactionOutcome {
                reverse_path,
                recipients,
            }));
    }

    /// `BDAT <size> LAST` and the body, after any commands already written.
    /// Binary content goes as it is; other content gets the final CRLF a
    /// message needs when it lacks one.
    fn send_bdat(&mut self) {
        let Some(a) = self.active.as_ref() else {
            return;
        };
        let size = if a.tx.body_type == Some(BodyType::BinaryMime) {
            self.scratch.push(a.tx.body.clone());
            a.tx.body.len()
        } else {
            chunk_body(&a.tx.body, &mut self.scratch)
        };
        let _ = write!(self.cmd, "BDAT {size} LAST\r\n");
        self.flush_cmd();
        self.out.extend(self.scratch.drain(..));
        let next = self.body_reply();
        self.expect.push_back(next);
    }

    fn flush_cmd(&mut self) {
        if !self.cmd.is_empty() {
            self.out.push_back(self.cmd.split().freeze());
        }
    }

    /// Reports the active transaction, then RSETs or moves on.
    fn finish(&mut self, rset: bool) {
        let Some(a) = self.active.take() else {
            return;
        };
        let recipients =
            a.tx.recipients
                .into_iter()
                .zip(a.results)
                .map(|(r, reply)| {
                    // Every path above fills each slot before finishing; this
                    // fallback only keeps a future slip from panicking.
                    let reply = reply.unwrap_or_else(|| {
                        Reply::new(451, EnhancedCode::new(4, 3, 0), "no reply recorded")
                    });
                    (r, reply)
                });
        self.report(a.tx.reverse_path, recipients);
        if rset {
            self.cmd.extend_from_slice(b"RSET\r\n");
            self.flush_cmd();
            self.expect.push_back(Expect::Rset);
        } else {
            self.advance();
        }
    }

    fn close(&mut self) {
        self.over = true;
        self.expect.clear();
        self.events.push_back(ClientEvent::Closed);
    }

    /// Ends the session and hands back the work it could not finish. Output
    /// not yet written is dropped; `courtesy_quit` leaves a QUIT for a server
    /// that is still talking (after a refusal rather than garbage).
    fn fail(&mut self, error: ClientError, courtesy_quit: bool) {
        self.over = true;
        self.expect.clear();
        self.out.clear();
        self.cmd.clear();
        if courtesy_quit {
            self.out.push_back(Bytes::from_static(b"QUIT\r\n"));
        }
        let unfinished = self
            .active
            .take()
            .map(|a| a.tx)
            .into_iter()
            .chain(self.queue.drain(..))
            .collect();
        self.events
            .push_back(ClientEvent::Failed { error, unfinished });
    }
}

/// An address can go into a command line: no control characters (RFC 5321
/// allows none, even quoted, and a CR or LF would inject commands).
fn address_fits_command(address: &str) -> bool {
    !address.bytes().any(|b| b < b' ' || b == 0x7f)
}

/// Why a body cannot go to this server unchanged, as the reply each
/// recipient gets; None when it can. Volley never converts content: RFC
/// 6152 allows a bounce instead of a conversion to 7 bits, and RFC 3030
/// allows binary content only over BDAT to a server that offers BINARYMIME.
fn unsendable_body(body_type: Option<BodyType>, caps: &Capabilities, bdat: bool) -> Option<Reply> {
    let why = match body_type {
        Some(BodyType::EightBitMime) if !caps.eight_bit_mime => {
            "8-bit content: the receiving server does not offer 8BITMIME, and Volley does not convert"
        }
        Some(BodyType::BinaryMime) if !(bdat && caps.binarymime) => {
            "binary content: the receiving server does not offer BINARYMIME with CHUNKING, and Volley does not convert"
        }
        _ => return None,
    };
    Some(Reply::new(554, EnhancedCode::new(5, 6, 3), why))
}
