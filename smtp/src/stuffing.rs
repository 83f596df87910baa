//! Outgoing message bodies as `Bytes` segments, without copying the body.
//!
//! One body may go to thousands of MX hosts. Instead of writing a stuffed copy
//! per connection, the encoders here cut the shared body into zero-copy
//! [`Bytes::slice`]s and put small static segments between them: a `.` before
//! a line that starts with a dot (RFC 5321 4.5.2), a CR before a bare LF and
//! an LF after a bare CR (RFC 5321 2.3.8 forbids sending either alone, and a
//! receiver that takes them for line ends could otherwise see an end of data
//! inside the body: SMTP smuggling), the final CRLF when the body lacks one,
//! and for DATA the `.` CRLF that ends it. A body with no dots at line starts
//! and clean line ends costs one slice and one static segment.

use bytes::Bytes;

const DOT: Bytes = Bytes::from_static(b".");
const CR: Bytes = Bytes::from_static(b"\r");
const LF: Bytes = Bytes::from_static(b"\n");
const END: Bytes = Bytes::from_static(b".\r\n");
const CRLF_END: Bytes = Bytes::from_static(b"\r\n.\r\n");
const CRLF: Bytes = Bytes::from_static(b"\r\n");

/// Appends `body` as a DATA payload: dot-stuffed, line ends made CRLF, a final
/// CRLF added when missing, then the `.` CRLF terminator. Returns the number
/// of octets appended.
pub fn dot_stuff(body: &Bytes, out: &mut impl Extend<Bytes>) -> usize {
    let (len, ends_with_line) = encode(body, true, out);
    if ends_with_line {
        out.extend([END]);
        len + END.len()
    } else {
        out.extend([CRLF_END]);
        len + CRLF_END.len()
    }
}

/// Appends `body` as a BDAT payload: no stuffing (RFC 3030 chunks are sent as
/// they are), but line ends made CRLF and a final CRLF added when missing, so
/// the receiver gets the same message as through [`dot_stuff`]. Returns the
/// number of octets appended, which is the BDAT chunk size.
pub fn chunk_body(body: &Bytes, out: &mut impl Extend<Bytes>) -> usize {
    let (len, ends_with_line) = encode(body, false, out);
    if ends_with_line {
        len
    } else {
        out.extend([CRLF]);
        len + CRLF.len()
    }
}

/// The common walk: slices of `body` with insertions between. Returns the
/// octets appended and whether the output ends at a line start (an empty
/// body counts as one).
fn encode(body: &Bytes, stuff: bool, out: &mut impl Extend<Bytes>) -> (usize, bool) {
    let bytes = &body[..];
    let mut len = 0;
    // Start of the body bytes not yet appended.
    let mut from = 0;
    let mut push = |segment: Bytes, len: &mut usize| {
        *len += segment.len();
        out.extend([segment]);
    };
    if stuff && bytes.first() == Some(&b'.') {
        push(DOT, &mut len);
    }
    let mut iter = memchr::memchr2_iter(b'\r', b'\n', bytes);
    while let Some(i) = iter.next() {
        // `line_start` is the index after the line end that starts at `i`.
        let line_start;
        if bytes[i] == b'\r' {
            if bytes.get(i + 1) == Some(&b'\n') {
                // A proper CRLF: skip its LF.
                iter.next();
                line_start = i + 2;
            } else {
                // Bare CR: append through it, then an LF.
                push(body.slice(from..=i), &mut len);
                push(LF, &mut len);
                from = i + 1;
                line_start = i + 1;
            }
        } else {
            // Bare LF: append up to it, a CR, and let the LF follow.
            push(body.slice(from..i), &mut len);
            push(CR, &mut len);
            from = i;
            line_start = i + 1;
        }
        if stuff && bytes.get(line_start) == Some(&b'.') {
            push(body.slice(from..line_start), &mut len);
            push(DOT, &mut len);
            from = line_start;
        }
    }
    if from < bytes.len() {
        push(body.slice(from..), &mut len);
    }
    let ends_with_line = bytes.is_empty() || matches!(bytes.last(), Some(b'\r' | b'\n'));
    (len, ends_with_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuffed(body: &[u8]) -> (Vec<u8>, Vec<Bytes>) {
        let body = Bytes::copy_from_slice(body);
        let mut segments = Vec::new();
        let n = dot_stuff(&body, &mut segments);
        let flat = segments.concat();
        assert_eq!(n, flat.len());
        (flat, segments)
    }

    fn chunked(body: &[u8]) -> Vec<u8> {
        let body = Bytes::copy_from_slice(body);
        let mut segments = Vec::new();
        let n = chunk_body(&body, &mut segments);
        let flat = segments.concat();
        assert_eq!(n, flat.len());
        flat
    }

    /// What a compliant receiver (RFC 5321 4.5.2) recovers from DATA bytes.
    fn unstuff(wire: &[u8]) -> Vec<u8> {
        let text = wire.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        for line in text.split_inclusive(|&b| b == b'\n') {
            assert!(line.ends_with(b"\r\n"), "line without CRLF: {line:?}");
            assert_ne!(line, b".\r\n", "end of data inside the body");
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    #[test]
    fn plain_body_is_one_zero_copy_slice() {
        let body = Bytes::from_static(b"Subject: hi\r\n\r\nhello\r\n");
        let mut segments = Vec::new();
        dot_stuff(&body, &mut segments);
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].as_ptr(), body.as_ptr(), "sliced, not copied");
        assert_eq!(&segments[1][..], b".\r\n");
    }

    #[test]
    fn lines_starting_with_dots_are_stuffed() {
        let (wire, _) = stuffed(b".first\r\nmid\r\n..two\r\n.\r\nend\r\n");
        assert_eq!(
            wire,
            b"..first\r\nmid\r\n...two\r\n..\r\nend\r\n.\r\n".to_vec()
        );
        assert_eq!(unstuff(&wire), b".first\r\nmid\r\n..two\r\n.\r\nend\r\n");
    }

    #[test]
    fn dots_inside_lines_are_left_alone() {
        let (wire, segments) = stuffed(b"a.b\r\nc. .\r\n");
        assert_eq!(wire, b"a.b\r\nc. .\r\n.\r\n".to_vec());
        assert_eq!(segments.len(), 2);
    }

    #[test]
    fn empty_body() {
        assert_eq!(stuffed(b"").0, b".\r\n".to_vec());
        assert_eq!(chunked(b""), b"".to_vec());
    }

    #[test]
    fn body_without_final_crlf_gets_one() {
        assert_eq!(stuffed(b"a\r\nb").0, b"a\r\nb\r\n.\r\n".to_vec());
        assert_eq!(stuffed(b".").0, b"..\r\n.\r\n".to_vec());
        assert_eq!(chunked(b"a\r\nb"), b"a\r\nb\r\n".to_vec());
        assert_eq!(chunked(b"a\r\n"), b"a\r\n".to_vec());
    }

    #[test]
    fn bare_lf_and_cr_become_crlf_and_cannot_end_the_data() {
        // The smuggling shapes: "\n.\n", "\r.\r", "\n.\r\n".
        let (wire, _) = stuffed(b"a\n.\nb\r.\rc\n.\r\nd");
        assert_eq!(
            wire,
            b"a\r\n..\r\nb\r\n..\r\nc\r\n..\r\nd\r\n.\r\n".to_vec()
        );
        assert_eq!(unstuff(&wire), b"a\r\n.\r\nb\r\n.\r\nc\r\n.\r\nd\r\n");
        assert_eq!(stuffed(b"x\r").0, b"x\r\n.\r\n".to_vec());
        assert_eq!(stuffed(b"\n").0, b"\r\n.\r\n".to_vec());
        assert_eq!(chunked(b"a\nb\r"), b"a\r\nb\r\n".to_vec());
        assert_eq!(chunked(b"\r\r\n\n"), b"\r\n\r\n\r\n".to_vec());
    }

    #[test]
    fn chunk_body_does_not_stuff() {
        assert_eq!(chunked(b".a\r\n.\r\n"), b".a\r\n.\r\n".to_vec());
    }

    #[test]
    fn appends_to_existing_segments() {
        let body = Bytes::from_static(b"x\r\n");
        let mut out = std::collections::VecDeque::from([Bytes::from_static(b"DATA\r\n")]);
        dot_stuff(&body, &mut out);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn every_small_body_round_trips_through_a_compliant_receiver() {
        // All bodies of up to 6 bytes over the alphabet that matters.
        let alphabet = [b'.', b'\r', b'\n', b'a'];
        for len in 0..=6u32 {
            for n in 0..alphabet.len().pow(len) {
                let mut body = Vec::new();
                let mut k = n;
                for _ in 0..len {
                    body.push(alphabet[k % alphabet.len()]);
                    k /= alphabet.len();
                }
                let (wire, _) = stuffed(&body);
                let got = unstuff(&wire);
                assert_eq!(got, chunked(&body), "body {body:?}");
                if !body.contains(&b'\r') && !body.contains(&b'\n') && !body.is_empty() {
                    let mut want = body.clone();
                    want.extend_from_slice(b"\r\n");
                    assert_eq!(got, want);
                }
            }
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn body() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'.'),
                Just(b'\r'),
                Just(b'\n'),
                Just(b'a'),
                any::<u8>()
            ],
            0..600,
        )
    }

    proptest! {
        #[test]
        fn data_and_bdat_deliver_the_same_message(body in body()) {
            let shared = Bytes::from(body.clone());
            let mut data = Vec::new();
            let n = dot_stuff(&shared, &mut data);
            let data = data.concat();
            prop_assert_eq!(n, data.len());
            let mut bdat = Vec::new();
            chunk_body(&shared, &mut bdat);
            let bdat = bdat.concat();
            // A compliant receiver's view of the DATA stream.
            let text = data.strip_suffix(b".\r\n").unwrap();
            let mut got = Vec::new();
            for line in text.split_inclusive(|&b| b == b'\n') {
                prop_assert!(line.ends_with(b"\r\n"));
                prop_assert!(!line[..line.len() - 2].contains(&b'\r'));
                prop_assert_ne!(line, b".\r\n");
                got.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            }
            prop_assert_eq!(&got, &bdat);
            // Clean line ends come through unchanged.
            if !body.iter().any(|&b| b == b'\r' || b == b'\n') {
                let mut want = body.clone();
                if !want.is_empty() {
                    want.extend_from_slice(b"\r\n");
                }
                prop_assert_eq!(got, want);
            }
        }
    }
}
