//! The injection API's request body: JSON in KumoMTA's shape, its content
//! compiled as MiniJinja templates and rendered for each recipient
//! (`volley_engine::render_request`, what `POST /api/inject/v1` does before
//! it checks addresses and queues).
//!
//! Input: any bytes. A failure is a panic, or a rendered message over its
//! size limit, or one whose lines do not all end in CRLF: a malformed
//! request, a template that does not compile or loops, are errors, fine.
#![no_main]

use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 64 * 1024;

fuzz_target!(|input: &[u8]| {
    let Ok(rendered) = volley_engine::render_request(input, LIMIT) else {
        return;
    };
    for message in rendered.into_iter().flatten() {
        assert!(message.len() <= LIMIT, "{} bytes", message.len());
        assert!(message.ends_with(b"\r\n"));
        for (i, &b) in message.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && message[i - 1] == b'\r', "a bare LF at {i}");
            }
        }
    }
});
