//! The client's reply parser on bytes a remote mail server sends.
//!
//! Input: a byte choosing the line limit (0: the default of 2048 octets,
//! otherwise 8 times the byte), a list of piece lengths (see
//! `volley_fuzz::Header::cycle`), then the server's bytes.
//!
//! The bytes are parsed twice: pushed whole, and pushed in pieces of the
//! listed lengths with every complete reply taken out after each push, as
//! a socket hands them over. A failure is a panic, a difference between
//! the two (in the replies, or in the error that ends them), a reply of
//! more than 256 lines, or more than a line's worth of bytes held after
//! the parser said it needs more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volley_fuzz::{Cycle, Header};
use volley_smtp::{DEFAULT_MAX_REPLY_LINE, Reply, ReplyError, ReplyParser};

fuzz_target!(|input: &[u8]| {
    let mut header = Header::new(input);
    let max_line = match header.byte() {
        0 => DEFAULT_MAX_REPLY_LINE,
        b => usize::from(b) * 8,
    };
    let cuts = header.cycle();
    let bytes = header.rest();

    let whole = parse(bytes, max_line, Cycle::empty());
    let pieces = parse(bytes, max_line, cuts);
    assert_eq!(
        whole, pieces,
        "pushing the bytes in pieces changed the result"
    );
});

/// The replies parsed and the error that stopped the parser, if any.
fn parse(
    mut bytes: &[u8],
    max_line: usize,
    mut cuts: Cycle<'_>,
) -> (Vec<Reply>, Option<ReplyError>) {
    let mut parser = ReplyParser::new(max_line);
    let mut replies = Vec::new();
    while !bytes.is_empty() {
        let (piece, rest) = bytes.split_at(cuts.next_len().min(bytes.len()));
        bytes = rest;
        parser.push(piece);
        loop {
            match parser.next_reply() {
                Ok(Some(reply)) => {
                    assert!(!reply.lines.is_empty() && reply.lines.len() <= 256);
                    assert!((200..=599).contains(&reply.code));
                    replies.push(reply);
                }
                Ok(None) => break,
                Err(e) => return (replies, Some(e)),
            }
        }
        assert!(
            parser.buffered() < max_line.max(8),
            "{} octets held with a line limit of {max_line}",
            parser.buffered()
        );
    }
    (replies, None)
}
