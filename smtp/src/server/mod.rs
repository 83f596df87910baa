//! The server side (ingest from a Composer): a sans-IO SMTP/LMTP session.
//!
//! The caller feeds received octets with [`Server::receive`], pulls events
//! with [`Server::poll_event`] and sends what [`Server::output`] holds.
//! Events that need a decision (MAIL, RCPT, end of message) pause input
//! processing until the matching verdict method is called, however long the
//! engine takes; nothing else is held meanwhile but the bounded input buffer.

mod auth;
mod config;
mod data;

use bytes::{Buf, Bytes, BytesMut};

use crate::address::{ForwardPath, Mailbox};
use crate::command::{BodyType, Command, MailParams, RcptParams, parse_command};
use crate::reply::{EnhancedCode, Reply};

pub use auth::Credentials;
pub use config::{Extensions, ServerConfig};
pub use data::AbortReason;
use data::{DataScan, Scan};

/// The engine's answer to a MAIL, a RCPT or a finished message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Accept: the server sends its own 250 reply.
    Accept,
    /// Accept with this 250 text after the enhanced code, e.g. `OK queued
    /// as 0001000000000007`, so a Composer can match the message to the
    /// relay's logs. Meant for the end of a message; for MAIL and RCPT it
    /// is the same as [`Verdict::Accept`].
    AcceptWith(String),
    /// Refuse with this reply, transient (e.g. `452 4.3.1`) or permanent
    /// (e.g. `550 5.7.1`). The code should be 4yz or 5yz.
    Reject(Reply),
}

/// Something the engine must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// MAIL FROM passed syntax and limits; answer with
    /// [`Server::mail_verdict`]. `reverse_path` is None for `<>`.
    Mail {
        /// The sender, None for the null path.
        reverse_path: Option<Mailbox>,
        /// The parameters.
        params: MailParams,
    },
    /// RCPT TO passed syntax and limits; answer with [`Server::rcpt_verdict`].
    Rcpt {
        /// The recipient; [`ForwardPath::Postmaster`] for the domainless
        /// `<Postmaster>`, which the engine must route or refuse itself.
        forward_path: ForwardPath,
        /// The parameters.
        params: RcptParams,
    },
    /// The next piece of the message body, dot-unstuffed (DATA) or as sent
    /// (BDAT). A slice of the receive buffer, not a copy.
    BodyChunk(Bytes),
    /// The body is complete; answer with [`Server::message_verdict`]: once
    /// for SMTP, once per accepted recipient, in RCPT order, for LMTP.
    MessageComplete,
    /// The transaction in progress (after an accepted MAIL) is gone: forget
    /// its envelope and any body chunks. The server has already replied.
    TransactionAborted(AbortReason),
    /// The client sent QUIT; `221` is queued. Send the output, then close.
    Quit,
    /// The server gave up on the session; a `421` is queued. Send the
    /// output, then close.
    Closed(CloseReason),
    /// The client asked for STARTTLS; answer with
    /// [`Server::starttls_verdict`]. After an accept, `220` is queued:
    /// send the output, throw away every received octet not yet given to
    /// the server (a command pipelined after STARTTLS must never run
    /// inside TLS), run the TLS handshake, then call
    /// [`Server::tls_started`], or close the connection when it fails.
    StartTls,
    /// The client gave credentials with AUTH; answer with
    /// [`Server::auth_verdict`] once they are checked.
    Auth(Credentials),
}

/// Why the server closed a session on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// More protocol errors than `max_errors`.
    TooManyErrors,
}

/// Which verdict the server is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// [`Server::mail_verdict`].
    Mail,
    /// [`Server::rcpt_verdict`].
    Rcpt,
    /// [`Server::message_verdict`], this many more times.
    Message {
        /// Verdicts still expected (LMTP: one per accepted recipient).
        remaining: usize,
    },
    /// [`Server::starttls_verdict`].
    StartTls,
    /// [`Server::tls_started`], after the TLS handshake.
    Tls,
    /// [`Server::auth_verdict`].
    Auth,
}

/// A verdict method was called when the server was not waiting for it: a
/// bug in the caller, reported instead of corrupting the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unexpected {got} verdict (server is waiting for {waiting:?})")]
pub struct UnexpectedVerdict {
    /// The verdict method called.
    pub got: &'static str,
    /// What the server waits for, if anything.
    pub waiting: Option<Pending>,
}

impl UnexpectedVerdict {
    /// Always false: calling again will not help.
    pub fn is_transient(&self) -> bool {
        false
    }
}

#[derive(Debug)]
enum Phase {
    Command,
    /// Dropping an over-long command line up to its LF.
    DiscardLine,
    Data(DataScan),
    /// `.\r\n` seen after a final body chunk was handed out.
    DataEnd(Option<AbortReason>),
    Bdat {
        remaining: u64,
        last: bool,
        /// Set when the chunk is drained, not delivered: the reply to send.
        refuse: Option<Refusal>,
    },
    Await(Pending),
    Closed,
}

#[derive(Debug)]
struct Refusal {
    reply: Reply,
    /// Counts as a protocol error.
    error: bool,
    /// The transaction ends with this reason.
    abort: Option<AbortReason>,
    /// Times the reply is sent (LMTP: once per recipient after BDAT LAST).
    repeat: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hello {
    Helo,
    Ehlo,
}

#[derive(Debug, Default)]
struct Transaction {
    active: bool,
    smtputf8: bool,
    body: Option<BodyType>,
    rcpts: usize,
    size: u64,
    bdat: bool,
}

/// One SMTP or LMTP server session as a state machine.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    phase: Phase,
    input: BytesMut,
    out: Vec<u8>,
    out_start: usize,
    hello: Option<Hello>,
    client_name: Option<String>,
    txn: Transaction,
    errors: u32,
    /// TLS is active (after STARTTLS and its handshake).
    tls: bool,
    /// AUTH is waiting for this response line.
    auth_step: Option<auth::Step>,
    /// The user the client authenticated as.
    authenticated: Option<String>,
    /// The user of the AUTH whose verdict is pending.
    authenticating: Option<String>,
    /// The EHLO/LHLO extension lines, built once per TLS state.
    ehlo_tail: Vec<u8>,
}

const E_OK: EnhancedCode = EnhancedCode::new(2, 0, 0);
const E_SYNTAX: EnhancedCode = EnhancedCode::new(5, 5, 2);
const E_SEQUENCE: EnhancedCode = EnhancedCode::new(5, 5, 1);
const E_PARAM: EnhancedCode = EnhancedCode::new(5, 5, 4);
const E_SIZE: EnhancedCode = EnhancedCode::new(5, 3, 4);

impl Server {
    /// A new session; the 220 greeting is already in [`Server::output`].
    pub fn new(mut config: ServerConfig) -> Server {
        config.max_input_buffer = config.max_input_buffer.max(2 * config.max_command_line);
        let ehlo_tail = ehlo_tail(&config, config.implicit_tls);
        let mut s = Server {
            phase: Phase::Command,
            input: BytesMut::with_capacity(config.max_input_buffer.min(64 * 1024)),
            out: Vec::with_capacity(1024),
            out_start: 0,
            hello: None,
            client_name: None,
            txn: Transaction::default(),
            errors: 0,
            tls: config.implicit_tls,
            auth_step: None,
            authenticated: None,
            authenticating: None,
            ehlo_tail,
            config,
        };
        // RFC 2034 puts no enhanced code on the greeting.
        let proto = if s.config.lmtp { "LMTP" } else { "ESMTP" };
        let greeting = format!("220 {} {proto} Volley ready\r\n", s.config.hostname);
        s.out.extend_from_slice(greeting.as_bytes());
        s
    }

    /// The configuration in force.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Appends received octets; returns how many were taken. Fewer than
    /// `input.len()` means the input buffer is full (a verdict is pending or
    /// [`Server::poll_event`] has not been called): keep the rest and stop
    /// reading the socket until events have been handled. After the session
    /// closed, all input is taken and dropped.
    #[must_use = "input that was not taken must be offered again"]
    pub fn receive(&mut self, input: &[u8]) -> usize {
        // Octets before the TLS handshake are dropped, never kept for later.
        if self.is_closed() || self.pending() == Some(Pending::Tls) {
            return input.len();
        }
        let n = input.len().min(self.input_room());
        self.input.extend_from_slice(&input[..n]);
        n
    }

    /// How many octets [`Server::receive`] would take now.
    pub fn input_room(&self) -> usize {
        self.config
            .max_input_buffer
            .saturating_sub(self.input.len())
    }

    /// Replies not yet sent.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_start..]
    }

    /// Overwrites `bytes` of [`Server::output`] from `offset` on, for a
    /// queued reply whose text held a same-length placeholder for what was
    /// known only later (a queue id a journal assigns). False, and nothing
    /// changed, when the range is not all unsent output.
    pub fn overwrite_output(&mut self, offset: usize, bytes: &[u8]) -> bool {
        let start = self.out_start + offset;
        match self.out.get_mut(start..start + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Marks the first `n` octets of [`Server::output`] as sent.
    pub fn consume_output(&mut self, n: usize) {
        self.out_start = (self.out_start + n).min(self.out.len());
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        }
    }

    /// True once the session is over (QUIT, 421, timeout): send the output
    /// that remains, then close the connection.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Whether the client has started a command line and not finished it:
    /// some of its octets are in, its line end is not (call it once the
    /// events are handled). A deadline on the whole line, not on each
    /// read, is what stops a client that sends one octet at a time from
    /// holding a session (slowloris); the engine keeps that deadline,
    /// since this machine has no clock.
    pub fn command_in_progress(&self) -> bool {
        matches!(self.phase, Phase::Command | Phase::DiscardLine) && !self.input.is_empty()
    }

    /// The verdict the server waits for, if any.
    pub fn pending(&self) -> Option<Pending> {
        match self.phase {
            Phase::Await(p) => Some(p),
            _ => None,
        }
    }

    /// The name the client gave in EHLO/HELO/LHLO (for a Received header).
    pub fn client_name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }

    /// Whether the client greeted with EHLO or LHLO (so the session is
    /// ESMTP or LMTP), not HELO: the `with` of a Received header.
    pub fn extended(&self) -> bool {
        self.hello == Some(Hello::Ehlo)
    }

    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The user the client authenticated as with AUTH, if it did.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// The engine's answer to [`ServerEvent::Auth`]: accept (`235 2.7.0`)
    /// or refuse with a reply such as `535 5.7.8` (wrong credentials) or
    /// `454 4.7.0` (too many failures, try later).
    pub fn auth_verdict(&mut self, verdict: Verdict) -> Result<(), UnexpectedVerdict> {
        self.expect(Pending::Auth, "auth")?;
        let user = self.authenticating.take();
        match verdict {
            Verdict::Accept | Verdict::AcceptWith(_) => {
                self.authenticated = user;
                self.reply(235, EnhancedCode::new(2, 7, 0), "Authentication successful");
            }
            Verdict::Reject(r) => self.reply_full(&r),
        }
        self.phase = Phase::Command;
        Ok(())
    }

    /// The engine's answer to [`ServerEvent::StartTls`]: accept (`220`,
    /// then the handshake) or refuse with a reply such as `454 4.7.0`
    /// (the session goes on in clear text).
    pub fn starttls_verdict(&mut self, verdict: Verdict) -> Result<(), UnexpectedVerdict> {
        self.expect(Pending::StartTls, "starttls")?;
        match verdict {
            Verdict::Accept | Verdict::AcceptWith(_) => {
                self.reply(220, E_OK, "Ready to start TLS");
                // What the client wrote after STARTTLS was written before
                // it saw our 220: it is not meant for the TLS session
                // (CVE-2011-0411).
                self.input.clear();
                self.phase = Phase::Await(Pending::Tls);
            }
            Verdict::Reject(r) => {
                self.reply_full(&r);
                self.phase = Phase::Command;
            }
        }
        Ok(())
    }

    /// The TLS handshake after [`ServerEvent::StartTls`] succeeded. The
    /// session starts over as RFC 3207 4.2 says: the client must greet
    /// again, and nothing it said before counts.
    pub fn tls_started(&mut self) -> Result<(), UnexpectedVerdict> {
        self.expect(Pending::Tls, "tls_started")?;
        self.tls = true;
        self.hello = None;
        self.client_name = None;
        self.txn = Transaction::default();
        self.input.clear();
        self.ehlo_tail = ehlo_tail(&self.config, true);
        self.phase = Phase::Command;
        Ok(())
    }

    /// The client was idle too long: queues `421 4.4.2` and closes.
    pub fn timeout(&mut self) {
        self.close_with(
            421,
            EnhancedCode::new(4, 4, 2),
            "timeout, closing connection",
        );
    }

    /// The server is shutting down: queues `421 4.3.2` and closes.
    pub fn shutdown(&mut self) {
        self.close_with(
            421,
            EnhancedCode::new(4, 3, 2),
            "shutting down, try again later",
        );
    }

    fn close_with(&mut self, code: u16, e: EnhancedCode, text: &str) {
        if !self.is_closed() {
            let text = format!("{} {text}", self.config.hostname);
            self.reply(code, e, &text);
            self.phase = Phase::Closed;
            self.input.clear();
        }
    }

    /// The engine's answer to [`ServerEvent::Mail`].
    pub fn mail_verdict(&mut self, verdict: Verdict) -> Result<(), UnexpectedVerdict> {
        self.expect(Pending::Mail, "mail")?;
        match verdict {
            Verdict::Accept | Verdict::AcceptWith(_) => {
                self.txn.active = true;
                self.reply(250, EnhancedCode::new(2, 1, 0), "OK");
            }
            Verdict::Reject(r) => {
                self.txn = Transaction::default();
                self.reply_full(&r);
            }
        }
        self.phase = Phase::Command;
        Ok(())
    }

    /// The engine's answer to [`ServerEvent::Rcpt`].
    pub fn rcpt_verdict(&mut self, verdict: Verdict) -> Result<(), UnexpectedVerdict> {
        self.expect(Pending::Rcpt, "rcpt")?;
        match verdict {
            Verdict::Accept | Verdict::AcceptWith(_) => {
                self.txn.rcpts += 1;
                self.reply(250, EnhancedCode::new(2, 1, 5), "OK");
            }
            Verdict::Reject(r) => self.reply_full(&r),
        }
        self.phase = Phase::Command;
        Ok(())
    }

    /// The engine's answer to [`ServerEvent::MessageComplete`]: once for
    /// SMTP; for LMTP once per accepted recipient, in RCPT order.
    pub fn message_verdict(&mut self, verdict: Verdict) -> Result<(), UnexpectedVerdict> {
        let Phase::Await(Pending::Message { remaining }) = self.phase else {
            return Err(UnexpectedVerdict {
                got: "message",
                waiting: self.pending(),
            });
        };
        match verdict {
            Verdict::Accept => self.reply(250, E_OK, "OK"),
            Verdict::AcceptWith(text) => self.reply(250, E_OK, &text),
            Verdict::Reject(r) => self.reply_full(&r),
        }
        if remaining > 1 {
            self.phase = Phase::Await(Pending::Message {
                remaining: remaining - 1,
            });
        } else {
            self.txn = Transaction::default();
            self.phase = Phase::Command;
        }
        Ok(())
    }

    /// Answers [`ServerEvent::MessageComplete`] with the same verdict for
    /// every recipient still waiting: one reply for SMTP, one per accepted
    /// recipient for LMTP.
    pub fn message_verdict_all(&mut self, verdict: Verdict) -> Result<(), UnexpectedVerdict> {
        self.message_verdict(verdict.clone())?;
        while matches!(self.phase, Phase::Await(Pending::Message { .. })) {
            self.message_verdict(verdict.clone())?;
        }
        Ok(())
    }

    /// Accepts the complete message for every recipient still waiting
    /// (`250 2.0.0 OK`), as a sink that keeps everything does.
    pub fn accept_message(&mut self) -> Result<(), UnexpectedVerdict> {
        self.message_verdict_all(Verdict::Accept)
    }

    fn expect(&self, want: Pending, got: &'static str) -> Result<(), UnexpectedVerdict> {
        match self.phase {
            Phase::Await(p) if p == want => Ok(()),
            _ => Err(UnexpectedVerdict {
                got,
                waiting: self.pending(),
            }),
        }
    }

    /// Processes buffered input until an event is ready (Some) or more
    /// input, a verdict, or sending output is needed (None). Replies go to
    /// [`Server::output`] as commands are processed, in order.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        loop {
            if self.out.len() - self.out_start >= self.config.max_output_buffer {
                return None;
            }
            match &mut self.phase {
                Phase::Closed | Phase::Await(_) => return None,
                Phase::Command => {
                    let Some(lf) = memchr::memchr(b'\n', &self.input) else {
                        if self.input.len() >= self.config.max_command_line {
                            self.input.clear();
                            self.phase = Phase::DiscardLine;
                            continue;
                        }
                        return None;
                    };
                    if lf + 1 > self.config.max_command_line {
                        self.input.advance(lf + 1);
                        if let Some(ev) = self.line_too_long() {
                            return Some(ev);
                        }
                        continue;
                    }
                    if lf == 0 || self.input[lf - 1] != b'\r' {
                        self.input.advance(lf + 1);
                        let ev = self.error(500, E_SYNTAX, "Syntax error: line must end with CRLF");
                        if ev.is_some() {
                            return ev;
                        }
                        continue;
                    }
                    if let Some(step) = self.auth_step.take() {
                        let line = std::str::from_utf8(&self.input[..lf - 1])
                            .unwrap_or("\u{fffd}")
                            .to_owned();
                        self.input.advance(lf + 1);
                        if let Some(ev) = self.auth_next(auth::step(step, &line)) {
                            return Some(ev);
                        }
                        continue;
                    }
                    let parsed = parse_command(&self.input[..lf - 1]);
                    self.input.advance(lf + 1);
                    let ev = match parsed {
                        Ok(cmd) => self.command(cmd),
                        Err(e) => {
                            let r = e.reply();
                            self.error_reply(&r)
                        }
                    };
                    if ev.is_some() {
                        return ev;
                    }
                }
                Phase::DiscardLine => match memchr::memchr(b'\n', &self.input) {
                    None => {
                        self.input.clear();
                        return None;
                    }
                    Some(lf) => {
                        self.input.advance(lf + 1);
                        self.phase = Phase::Command;
                        if let Some(ev) = self.line_too_long() {
                            return Some(ev);
                        }
                    }
                },
                Phase::Data(scan) => {
                    let step = scan.scan(&self.input);
                    let (len, skip, end) = match step {
                        Scan::Chunk { len, skip } => (len, skip, false),
                        Scan::End { len } => (len, 3, true),
                        Scan::More { len } => (len, 0, false),
                    };
                    if len == 0 && skip == 0 && !end {
                        return None;
                    }
                    let chunk = self.body_octets(len);
                    self.input.advance(skip);
                    if end && let Phase::Data(scan) = &self.phase {
                        self.phase = Phase::DataEnd(scan.fault);
                    }
                    if chunk.is_some() {
                        return chunk;
                    }
                }
                Phase::DataEnd(fault) => {
                    let fault = *fault;
                    return Some(self.end_of_message(fault));
                }
                Phase::Bdat {
                    remaining,
                    last,
                    refuse,
                } => {
                    let avail = (self.input.len() as u64).min(*remaining);
                    if avail == 0 && *remaining > 0 {
                        return None;
                    }
                    *remaining -= avail;
                    let done = *remaining == 0;
                    let last = *last;
                    if refuse.is_some() {
                        self.input.advance(avail as usize);
                        if done
                            && let Phase::Bdat {
                                refuse: Some(refuse),
                                ..
                            } = std::mem::replace(&mut self.phase, Phase::Command)
                            && let Some(ev) = self.refuse(refuse)
                        {
                            return Some(ev);
                        }
                        continue;
                    }
                    let chunk = (avail > 0).then(|| self.input.split_to(avail as usize).freeze());
                    if done {
                        if last {
                            self.phase = Phase::DataEnd(None);
                        } else {
                            self.phase = Phase::Command;
                            let text = format!("{} octets received", self.txn.size);
                            self.reply(250, E_OK, &text);
                        }
                    }
                    if let Some(c) = chunk {
                        return Some(ServerEvent::BodyChunk(c));
                    }
                }
            }
        }
    }

    /// Takes `len` body octets off the input: a chunk event unless the
    /// message is already doomed or this makes it too large.
    fn body_octets(&mut self, len: usize) -> Option<ServerEvent> {
        if len == 0 {
            return None;
        }
        let Phase::Data(scan) = &mut self.phase else {
            return None;
        };
        self.txn.size += len as u64;
        if self.txn.size > self.config.max_message_size {
            // Size wins over any other fault: the scan finds those as it
            // goes through a whole buffer before the octets are counted,
            // so "first" would depend on how the input was split.
            scan.fault = Some(AbortReason::TooLarge);
        }
        if scan.fault.is_some() {
            self.input.advance(len);
            return None;
        }
        Some(ServerEvent::BodyChunk(self.input.split_to(len).freeze()))
    }

    fn end_of_message(&mut self, fault: Option<AbortReason>) -> ServerEvent {
        match fault {
            None => {
                let remaining = self.lmtp_replies();
                self.phase = Phase::Await(Pending::Message { remaining });
                ServerEvent::MessageComplete
            }
            Some(why) => {
                self.phase = Phase::Command;
                // LMTP clients wait for one reply per accepted recipient
                // after the data, whatever happened to it (RFC 2033 4.2).
                let replies = self.lmtp_replies();
                self.txn = Transaction::default();
                let (code, e, text) = abort_reply(why, &self.config);
                for _ in 0..replies {
                    self.reply(code, e, &text);
                }
                ServerEvent::TransactionAborted(why)
            }
        }
    }

    /// How many replies end a message: one per accepted recipient for LMTP.
    fn lmtp_replies(&self) -> usize {
        if self.config.lmtp {
            self.txn.rcpts.max(1)
        } else {
            1
        }
    }

    fn refuse(&mut self, r: Refusal) -> Option<ServerEvent> {
        let aborted = r.abort.filter(|_| self.txn.active);
        for _ in 1..r.repeat {
            self.reply_full(&r.reply);
        }
        if r.abort.is_some() {
            self.txn = Transaction::default();
        }
        let ev = if r.error {
            self.error_reply(&r.reply)
        } else {
            self.reply_full(&r.reply);
            None
        };
        ev.or(aborted.map(ServerEvent::TransactionAborted))
    }

    fn line_too_long(&mut self) -> Option<ServerEvent> {
        let text = format!(
            "Line too long (max {} octets)",
            self.config.max_command_line
        );
        self.error(500, E_SYNTAX, &text)
    }

    fn reset(&mut self) -> Option<ServerEvent> {
        let was = self.txn.active;
        self.txn = Transaction::default();
        was.then_some(ServerEvent::TransactionAborted(AbortReason::Reset))
    }

    fn command(&mut self, cmd: Command) -> Option<ServerEvent> {
        let lmtp = self.config.lmtp;
        match cmd {
            Command::Ehlo(_) | Command::Helo(_) if lmtp => {
                self.error(500, E_SEQUENCE, "This is LMTP: use LHLO")
            }
            Command::Lhlo(_) if !lmtp => self.error(500, E_SYNTAX, "Command not recognized"),
            Command::Ehlo(name) | Command::Lhlo(name) => {
                let ev = self.reset();
                let first = format!("{} greets {name}", self.config.hostname);
                self.hello = Some(Hello::Ehlo);
                self.client_name = Some(name);
                // RFC 2034 exempts EHLO replies from enhanced codes, and
                // clients read the keyword right after `250-`.
                let sep = if self.ehlo_tail.is_empty() {
                    b' '
                } else {
                    b'-'
                };
                self.reply_plain(250, sep, &first);
                self.out.extend_from_slice(&self.ehlo_tail);
                ev
            }
            Command::Helo(name) => {
                let ev = self.reset();
                self.hello = Some(Hello::Helo);
                self.client_name = Some(name);
                // RFC 2034: no enhanced code on the reply to HELO either.
                let text = self.config.hostname.clone();
                self.reply_plain(250, b' ', &text);
                ev
            }
            Command::Mail {
                reverse_path,
                params,
            } => self.mail(reverse_path, params),
            Command::Rcpt {
                forward_path,
                params,
            } => self.rcpt(forward_path, params),
            Command::Data => self.data(),
            Command::Bdat { size, last } => self.bdat(size, last),
            Command::Rset => {
                let ev = self.reset();
                self.reply(250, E_OK, "OK");
                ev
            }
            Command::Noop => {
                self.reply(250, E_OK, "OK");
                None
            }
            Command::Help => {
                self.reply(214, E_OK, "See RFC 5321 and RFC 2033");
                None
            }
            Command::Vrfy(_) => {
                self.reply(
                    252,
                    EnhancedCode::new(2, 5, 0),
                    "Cannot VRFY user, but will accept message and attempt delivery",
                );
                None
            }
            Command::StartTls => self.starttls(),
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial.as_deref()),
            Command::Quit => {
                let text = format!("{} closing connection", self.config.hostname);
                self.reply(221, E_OK, &text);
                self.phase = Phase::Closed;
                self.input.clear();
                Some(ServerEvent::Quit)
            }
        }
    }

    fn starttls(&mut self) -> Option<ServerEvent> {
        if self.tls {
            return self.error(503, E_SEQUENCE, "TLS already active");
        }
        if !self.config.extensions.starttls {
            return self.error(502, EnhancedCode::new(5, 5, 1), "STARTTLS not available");
        }
        if self.txn.active {
            return self.error(503, E_SEQUENCE, "MAIL transaction in progress");
        }
        self.phase = Phase::Await(Pending::StartTls);
        Some(ServerEvent::StartTls)
    }

    fn auth(&mut self, mechanism: &str, initial: Option<&str>) -> Option<ServerEvent> {
        if !self.config.extensions.auth {
            return self.error(502, EnhancedCode::new(5, 5, 1), "AUTH not available");
        }
        if !self.tls {
            return self.error(
                538,
                EnhancedCode::new(5, 7, 11),
                "Encryption required for requested authentication mechanism",
            );
        }
        if self.hello.is_none() {
            return self.error(503, E_SEQUENCE, "Send EHLO first");
        }
        if self.authenticated.is_some() {
            return self.error(503, E_SEQUENCE, "Already authenticated");
        }
        if self.txn.active {
            return self.error(
                503,
                E_SEQUENCE,
                "AUTH not allowed during a mail transaction",
            );
        }
        self.auth_next(auth::start(mechanism, initial))
    }

    /// After AUTH or one of its response lines: a challenge, the
    /// credentials for the engine, or a refusal.
    fn auth_next(&mut self, next: Result<auth::Next, Reply>) -> Option<ServerEvent> {
        match next {
            Ok(auth::Next::Challenge(challenge, step)) => {
                self.reply_plain(334, b' ', challenge);
                self.auth_step = Some(step);
                None
            }
            Ok(auth::Next::Done(credentials)) => {
                self.authenticating = Some(credentials.username.clone());
                self.phase = Phase::Await(Pending::Auth);
                Some(ServerEvent::Auth(credentials))
            }
            Err(reply) => self.error_reply(&reply),
        }
    }

    fn mail(&mut self, reverse_path: Option<Mailbox>, params: MailParams) -> Option<ServerEvent> {
        let ext = &self.config.extensions;
        if self.hello.is_none() {
            return self.error(503, E_SEQUENCE, "Send EHLO or HELO first");
        }
        if self.config.require_tls && !self.tls {
            self.reply(
                530,
                EnhancedCode::new(5, 7, 0),
                "Must issue a STARTTLS command first",
            );
            return None;
        }
        if self.txn.active {
            return self.error(503, E_SEQUENCE, "Nested MAIL command");
        }
        if params.is_extended() && self.hello == Some(Hello::Helo) {
            return self.error(555, E_PARAM, "No MAIL parameters after HELO: use EHLO");
        }
        if params.smtputf8 && !ext.smtputf8 {
            return self.error(555, E_PARAM, "SMTPUTF8 not supported");
        }
        let body_ok = match params.body {
            None | Some(BodyType::SevenBit) => true,
            Some(BodyType::EightBitMime) => ext.eight_bit_mime,
            Some(BodyType::BinaryMime) => ext.binarymime && ext.chunking,
        };
        if !body_ok {
            return self.error(555, E_PARAM, "BODY type not supported");
        }
        if params
            .size
            .is_some_and(|n| n > self.config.max_message_size)
        {
            let text = format!(
                "Message size exceeds fixed maximum of {} octets",
                self.config.max_message_size
            );
            self.reply(552, E_SIZE, &text);
            return None;
        }
        if !params.smtputf8 && reverse_path.as_ref().is_some_and(|m| !m.is_ascii()) {
            self.reply(
                553,
                EnhancedCode::new(5, 6, 7),
                "Non-ASCII address requires SMTPUTF8",
            );
            return None;
        }
        self.txn = Transaction {
            smtputf8: params.smtputf8,
            body: params.body,
            ..Transaction::default()
        };
        self.phase = Phase::Await(Pending::Mail);
        Some(ServerEvent::Mail {
            reverse_path,
            params,
        })
    }

    fn rcpt(&mut self, forward_path: ForwardPath, params: RcptParams) -> Option<ServerEvent> {
        if !self.txn.active {
            return self.error(503, E_SEQUENCE, "Need MAIL before RCPT");
        }
        if self.txn.bdat {
            return self.error(503, E_SEQUENCE, "RCPT not allowed during BDAT");
        }
        if self.txn.rcpts >= self.config.max_recipients {
            self.reply(452, EnhancedCode::new(4, 5, 3), "Too many recipients");
            return None;
        }
        if !self.txn.smtputf8 && !forward_path.is_ascii() {
            self.reply(
                553,
                EnhancedCode::new(5, 6, 7),
                "Non-ASCII address requires SMTPUTF8",
            );
            return None;
        }
        self.phase = Phase::Await(Pending::Rcpt);
        Some(ServerEvent::Rcpt {
            forward_path,
            params,
        })
    }

    fn data(&mut self) -> Option<ServerEvent> {
        if !self.txn.active {
            return self.error(503, E_SEQUENCE, "Need MAIL before DATA");
        }
        if self.txn.bdat {
            return self.error(503, E_SEQUENCE, "DATA not allowed after BDAT");
        }
        if self.txn.body == Some(BodyType::BinaryMime) {
            return self.error(503, E_SEQUENCE, "BODY=BINARYMIME requires BDAT");
        }
        if self.txn.rcpts == 0 {
            self.reply(554, E_SEQUENCE, "No valid recipients");
            return None;
        }
        // RFC 2034: no enhanced code on 3yz replies.
        self.out
            .extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
        self.phase = Phase::Data(DataScan::new(self.config.max_text_line));
        None
    }

    fn bdat(&mut self, size: u64, last: bool) -> Option<ServerEvent> {
        let repeat = if last { self.lmtp_replies() } else { 1 };
        let refusal = |reply, error, abort| {
            Some(Refusal {
                reply,
                error,
                abort,
                repeat: if abort.is_some() { repeat } else { 1 },
            })
        };
        let refuse = if !self.config.extensions.chunking {
            refusal(
                Reply::new(500, E_SYNTAX, "Command not recognized"),
                true,
                None,
            )
        } else if !self.txn.active {
            refusal(
                Reply::new(503, E_SEQUENCE, "Need MAIL before BDAT"),
                true,
                None,
            )
        } else if self.txn.rcpts == 0 {
            refusal(
                Reply::new(554, E_SEQUENCE, "No valid recipients"),
                false,
                None,
            )
        } else if self.txn.size.saturating_add(size) > self.config.max_message_size {
            let (code, e, text) = abort_reply(AbortReason::TooLarge, &self.config);
            refusal(
                Reply::new(code, e, text),
                false,
                Some(AbortReason::TooLarge),
            )
        } else {
            self.txn.bdat = true;
            self.txn.size += size;
            None
        };
        self.phase = Phase::Bdat {
            remaining: size,
            last,
            refuse,
        };
        None
    }

    /// Queues a protocol error reply; after `max_errors` of them, a 421 and
    /// the close event.
    fn error(&mut self, code: u16, e: EnhancedCode, text: &str) -> Option<ServerEvent> {
        self.reply(code, e, text);
        self.count_error()
    }

    fn error_reply(&mut self, r: &Reply) -> Option<ServerEvent> {
        self.reply_full(r);
        self.count_error()
    }

    fn count_error(&mut self) -> Option<ServerEvent> {
        self.errors += 1;
        if self.errors < self.config.max_errors {
            return None;
        }
        self.close_with(
            421,
            EnhancedCode::new(4, 7, 0),
            "too many errors, closing connection",
        );
        Some(ServerEvent::Closed(CloseReason::TooManyErrors))
    }

    fn reply(&mut self, code: u16, e: EnhancedCode, text: &str) {
        self.reply_line(code, b' ', e, text);
    }

    /// A reply line without an enhanced code, for the replies RFC 2034
    /// exempts (greeting, HELO, EHLO/LHLO).
    fn reply_plain(&mut self, code: u16, sep: u8, text: &str) {
        push_code(&mut self.out, code);
        self.out.push(sep);
        push_text(&mut self.out, text);
        self.out.extend_from_slice(b"\r\n");
    }

    fn reply_line(&mut self, code: u16, sep: u8, e: EnhancedCode, text: &str) {
        push_code(&mut self.out, code);
        self.out.push(sep);
        if self.config.extensions.enhanced_status_codes {
            push_enhanced(&mut self.out, e);
        }
        push_text(&mut self.out, text);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Queues an engine-supplied reply, sanitized so that its text can never
    /// break the reply stream (no CR/LF inside a line, code in 200..=599).
    fn reply_full(&mut self, r: &Reply) {
        let code = if (200..=599).contains(&r.code) {
            r.code
        } else {
            451
        };
        let e = r
            .enhanced
            .unwrap_or(EnhancedCode::new((code / 100) as u8, 0, 0));
        let n = r.lines.len().max(1);
        for i in 0..n {
            let text = r.lines.get(i).map(String::as_str).unwrap_or("");
            let sep = if i + 1 == n { b' ' } else { b'-' };
            self.reply_line(code, sep, e, text);
        }
    }
}

fn push_code(out: &mut Vec<u8>, code: u16) {
    out.extend_from_slice(&[
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
}

fn push_enhanced(out: &mut Vec<u8>, e: EnhancedCode) {
    use std::io::Write;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{e} ");
}

/// Appends reply text with any CR/LF replaced, so a line stays one line.
fn push_text(out: &mut Vec<u8>, text: &str) {
    if memchr::memchr2(b'\r', b'\n', text.as_bytes()).is_none() {
        out.extend_from_slice(text.as_bytes());
    } else {
        out.extend(
            text.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    }
}

fn abort_reply(why: AbortReason, config: &ServerConfig) -> (u16, EnhancedCode, String) {
    match why {
        AbortReason::Reset => (250, E_OK, "OK".into()),
        AbortReason::TooLarge => (
            552,
            E_SIZE,
            format!(
                "Message size exceeds fixed maximum of {} octets",
                config.max_message_size
            ),
        ),
        AbortReason::BareLineEnding => (
            550,
            EnhancedCode::new(5, 6, 0),
            "Bare CR or LF not allowed in message data: lines must end with CRLF".into(),
        ),
        AbortReason::LineTooLong => (
            500,
            E_SYNTAX,
            format!("Line too long (max {} octets)", config.max_text_line),
        ),
        AbortReason::NulOctet => (
            550,
            EnhancedCode::new(5, 6, 0),
            "NUL octets not allowed in message data".into(),
        ),
    }
}

/// The EHLO/LHLO reply lines after the first: `250-EXT\r\n`, the last with
/// `250 `. No enhanced code: RFC 2034 exempts EHLO replies, and RFC 5321's
/// grammar puts the keyword right after the separator, where clients look.
fn ehlo_tail(config: &ServerConfig, tls: bool) -> Vec<u8> {
    let x = &config.extensions;
    let mut lines: Vec<String> = Vec::new();
    if x.starttls && !tls {
        lines.push("STARTTLS".into());
    }
    if x.auth && tls {
        lines.push("AUTH PLAIN LOGIN".into());
    }
    if x.pipelining {
        lines.push("PIPELINING".into());
    }
    if x.eight_bit_mime {
        lines.push("8BITMIME".into());
    }
    if x.size {
        lines.push(format!("SIZE {}", config.max_message_size));
    }
    if x.enhanced_status_codes {
        lines.push("ENHANCEDSTATUSCODES".into());
    }
    if x.smtputf8 {
        lines.push("SMTPUTF8".into());
    }
    if x.chunking {
        lines.push("CHUNKING".into());
        if x.binarymime {
            lines.push("BINARYMIME".into());
        }
    }
    if x.dsn {
        lines.push("DSN".into());
    }
    let mut out = Vec::new();
    let n = lines.len();
    for (i, l) in lines.iter().enumerate() {
        out.extend_from_slice(b"250");
        out.push(if i + 1 == n { b' ' } else { b'-' });
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests;
