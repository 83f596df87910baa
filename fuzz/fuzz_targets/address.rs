//! Address and domain parsing, as MAIL FROM and RCPT TO hand it text from
//! a Composer: `Domain::parse`, `Mailbox::parse`, the reverse and forward
//! paths (`<...>`), and the routing key (lower case, IDNA A-labels) that
//! picks a shard and names a queue.
//!
//! Input: any bytes; text that is not UTF-8 is read lossily (the server
//! only parses addresses from UTF-8 command lines).
//!
//! A failure is a panic, or a parsed mailbox or domain that does not read
//! back as itself from its own text form (what logs, DSNs and the journal
//! store), or a host name's routing key that is not stable: the key of a
//! key must be the key itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volley_smtp::{
    Domain, ForwardPath, Mailbox, parse_forward_path, parse_reverse_path, routing_key,
};

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    let text = text.as_ref();

    if let Ok(domain) = Domain::parse(text) {
        round_trip_domain(&domain);
    }
    if let Ok(mailbox) = Mailbox::parse(text) {
        round_trip_mailbox(&mailbox);
    }
    if let Ok(Some(mailbox)) = parse_reverse_path(text) {
        round_trip_mailbox(&mailbox);
    }
    match parse_forward_path(text) {
        Ok(ForwardPath::Mailbox(mailbox)) => round_trip_mailbox(&mailbox),
        Ok(ForwardPath::Postmaster) | Err(_) => {}
    }
    if let Ok(key) = routing_key(text) {
        assert_eq!(
            routing_key(&key).as_deref(),
            Ok(key.as_str()),
            "key of {text:?}"
        );
    }
});

fn round_trip_domain(domain: &Domain) {
    let text = domain.to_string();
    assert_eq!(
        Domain::parse(&text).as_ref(),
        Ok(domain),
        "domain written as {text:?}"
    );
    // A literal's key (`[192.0.2.1]`) names a queue; it is no host name.
    if let (Domain::Name(_), Ok(key)) = (domain, domain.routing_key()) {
        assert_eq!(
            routing_key(&key).as_deref(),
            Ok(key.as_str()),
            "key of {text:?}"
        );
    }
}

fn round_trip_mailbox(mailbox: &Mailbox) {
    let text = mailbox.to_string();
    assert_eq!(
        Mailbox::parse(&text).as_ref(),
        Ok(mailbox),
        "mailbox written as {text:?}"
    );
    let path = format!("<{text}>");
    assert_eq!(
        parse_reverse_path(&path),
        Ok(Some(mailbox.clone())),
        "path {path:?}"
    );
    round_trip_domain(&mailbox.domain);
}
