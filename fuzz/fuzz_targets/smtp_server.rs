//! The SMTP/LMTP server session (what a Composer's bytes reach first):
//! commands, pipelined; DATA with dot-unstuffing and its end; BDAT; AUTH;
//! STARTTLS; every limit, set small so that the fuzzer reaches them.
//!
//! Input: a flags byte (bit 0 LMTP, 1 small limits, 2 DSN, 3 STARTTLS,
//! 4 AUTH, 5 TLS required, 6 implicit TLS, 7 the optional extensions
//! off), a list of piece lengths, a list of verdicts (see
//! `volley_fuzz::Header::cycle`), then the client's bytes.
//!
//! The session runs twice: once fed everything at once with every reply
//! sent as soon as it is queued, once fed in pieces of the listed lengths
//! and sending replies in pieces too. The engine's side answers every MAIL,
//! RCPT, end of data, STARTTLS and AUTH at once with the next listed
//! verdict (accept, accept with a text, or refuse).
//!
//! A failure is a panic; a stall (input left that the server does not
//! take, no event, no verdict awaited and nothing to send: a connection
//! that would hang); a verdict refused right after the event that asked
//! for it; bytes sent that the client's reply parser does not read as
//! whole replies; or, for a session without STARTTLS (which throws away
//! what was pipelined after it, so pieces legitimately matter), any
//! difference between the two runs in the events or the bytes sent (the
//! body chunks of a message that never completes aside: the engine drops
//! them).
#![no_main]

use libfuzzer_sys::fuzz_target;
use volley_fuzz::{Cycle, Header};
use volley_smtp::{
    EnhancedCode, Pending, Reply, ReplyParser, Server, ServerConfig, ServerEvent, Verdict,
};

fuzz_target!(|input: &[u8]| {
    let mut header = Header::new(input);
    let flags = header.byte();
    let cuts = header.cycle();
    let verdicts = header.cycle();
    let bytes = header.rest();

    let whole = run(config(flags), bytes, Cycle::empty(), verdicts.clone());
    let pieces = run(config(flags), bytes, cuts, verdicts);
    if !whole.tls && !pieces.tls {
        assert_eq!(whole.events, pieces.events, "pieces changed the events");
        assert_eq!(
            String::from_utf8_lossy(&whole.sent),
            String::from_utf8_lossy(&pieces.sent),
            "pieces changed the replies"
        );
    }
});

fn config(flags: u8) -> ServerConfig {
    let bit = |n: u8| flags & (1 << n) != 0;
    let mut c = ServerConfig {
        lmtp: bit(0),
        require_tls: bit(5),
        implicit_tls: bit(6),
        ..ServerConfig::default()
    };
    if bit(1) {
        c.max_command_line = 64;
        c.max_text_line = 80;
        c.max_message_size = 300;
        c.max_recipients = 3;
        c.max_errors = 3;
        c.max_input_buffer = 128;
        c.max_output_buffer = 200;
    }
    let e = &mut c.extensions;
    e.dsn = bit(2);
    e.starttls = bit(3);
    e.auth = bit(4);
    if bit(7) {
        e.pipelining = false;
        e.eight_bit_mime = false;
        e.size = false;
        e.enhanced_status_codes = false;
        e.smtputf8 = false;
        e.chunking = false;
        e.binarymime = false;
    }
    c
}

/// What one run saw: the events (body chunks joined) and the bytes sent.
#[derive(Default)]
struct Transcript {
    events: Vec<Event>,
    sent: Vec<u8>,
    /// A STARTTLS was accepted.
    tls: bool,
}

impl Transcript {
    /// Forgets body chunks that no end of data follows: how much of an
    /// aborted or unfinished message was handed out before the server saw
    /// its fate depends on the pieces, and the engine throws it away.
    fn drop_unfinished_body(&mut self) {
        if let Some(Event::Body(_)) = self.events.last() {
            self.events.pop();
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Body(Vec<u8>),
    Other(String),
}

fn run(
    config: ServerConfig,
    mut bytes: &[u8],
    mut cuts: Cycle<'_>,
    mut verdicts: Cycle<'_>,
) -> Transcript {
    let mut sends = cuts.clone();
    let mut server = Server::new(config);
    let mut replies = ReplyParser::default();
    let mut t = Transcript::default();
    loop {
        let mut progressed = false;
        if !bytes.is_empty() {
            let piece = &bytes[..cuts.next_len().min(bytes.len())];
            let took = server.receive(piece);
            assert!(took <= piece.len());
            bytes = &bytes[took..];
            progressed |= took > 0;
        }
        while let Some(event) = server.poll_event() {
            progressed = true;
            answer(&mut server, event, &mut verdicts, &mut t);
        }
        let unsent = server.output().len();
        if unsent > 0 {
            send(
                &mut server,
                sends.next_len().min(unsent),
                &mut replies,
                &mut t,
            );
            progressed = true;
        }
        if server.is_closed() || (bytes.is_empty() && !progressed) {
            break;
        }
        assert!(
            progressed,
            "stalled: {} octets not taken, waiting for {:?}",
            bytes.len(),
            server.pending()
        );
    }
    if !server.is_closed() {
        server.timeout();
    }
    let unsent = server.output().len();
    send(&mut server, unsent, &mut replies, &mut t);
    t.drop_unfinished_body();
    assert!(replies.is_empty(), "the session ended inside a reply");
    t
}

/// Sends `n` octets of output, and checks that they read as replies.
fn send(server: &mut Server, n: usize, replies: &mut ReplyParser, t: &mut Transcript) {
    let out = &server.output()[..n];
    t.sent.extend_from_slice(out);
    replies.push(out);
    server.consume_output(n);
    while replies
        .next_reply()
        .unwrap_or_else(|e| panic!("the server sent what no client can read: {e}"))
        .is_some()
    {}
}

/// Answers an event as the engine would, at once.
fn answer(server: &mut Server, event: ServerEvent, verdicts: &mut Cycle<'_>, t: &mut Transcript) {
    if let ServerEvent::BodyChunk(chunk) = &event {
        match t.events.last_mut() {
            Some(Event::Body(body)) => body.extend_from_slice(chunk),
            _ => t.events.push(Event::Body(chunk.to_vec())),
        }
        return;
    }
    if !matches!(event, ServerEvent::MessageComplete) {
        t.drop_unfinished_body();
    }
    t.events.push(Event::Other(format!("{event:?}")));
    let waiting = server.pending();
    let answered = match event {
        ServerEvent::Mail { .. } => server.mail_verdict(verdict(verdicts.next_value())),
        ServerEvent::Rcpt { .. } => server.rcpt_verdict(verdict(verdicts.next_value())),
        ServerEvent::MessageComplete => {
            let mut answered = Ok(());
            while answered.is_ok() && matches!(server.pending(), Some(Pending::Message { .. })) {
                answered = server.message_verdict(verdict(verdicts.next_value()));
            }
            answered
        }
        ServerEvent::StartTls => {
            let v = verdict(verdicts.next_value());
            let accept = !matches!(v, Verdict::Reject(_));
            let answered = server.starttls_verdict(v);
            if answered.is_ok() && accept {
                t.tls = true;
                server.tls_started()
            } else {
                answered
            }
        }
        ServerEvent::Auth(_) => server.auth_verdict(verdict(verdicts.next_value())),
        ServerEvent::BodyChunk(_)
        | ServerEvent::TransactionAborted(_)
        | ServerEvent::Quit
        | ServerEvent::Closed(_) => Ok(()),
    };
    if let Err(e) = answered {
        panic!("verdict refused after the event that asked for it ({waiting:?}): {e}");
    }
}

fn verdict(v: u8) -> Verdict {
    match v % 4 {
        0 | 1 => Verdict::Accept,
        2 => Verdict::AcceptWith("OK queued as 0001000000000007".into()),
        _ if v & 4 == 0 => {
            Verdict::Reject(Reply::new(450, EnhancedCode::new(4, 7, 1), "try later"))
        }
        _ => Verdict::Reject(Reply::new(550, EnhancedCode::new(5, 7, 1), "refused")),
    }
}
