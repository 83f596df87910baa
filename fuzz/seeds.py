#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/TARGET/.

The inputs are those of the crates' tests (SMTP sessions, server replies,
addresses, config files), with the few settings bytes each target reads
first (see the doc comment of each target). The journal seeds are real
body-log and journal files, encoded here as the journal writes them.
Run it again after changing a target's input layout: python3 fuzz/seeds.py
"""
import os
import struct

ROOT = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def cycle(values):
    return bytes([len(values)] + list(values))


# smtp_server: flags, piece lengths, verdicts, then the client's bytes.
def session(name, flags, cuts, verdicts, text):
    write("smtp_server", name, bytes([flags]) + cycle(cuts) + cycle(verdicts) + text.encode())


ENVELOPE = "EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@y.example>\r\n"
session("esmtp_data", 0, [], [],
        ENVELOPE + "DATA\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n")
session("esmtp_data_pieces", 0, [0, 6, 30, 1], [3, 0, 2],
        ENVELOPE + "RCPT TO:<z@y.example>\r\nDATA\r\na\r\n.\r\nRSET\r\nQUIT\r\n")
session("bdat", 0, [], [],
        "EHLO c\r\nMAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<x@y.example>\r\n"
        "BDAT 5\r\nhelloBDAT 0 LAST\r\nQUIT\r\n")
session("lmtp", 1, [], [0, 0, 0, 3],
        "LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\n"
        "DATA\r\nx\r\n.\r\nQUIT\r\n")
session("starttls_auth", 0x18, [], [],
        "EHLO c\r\nSTARTTLS\r\nEHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"
        "MAIL FROM:<a@b.example>\r\nQUIT\r\n")
session("auth_login_implicit_tls", 0x50, [], [3, 0],
        "EHLO c\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nAUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n")
session("smuggling", 0, [], [],
        ENVELOPE + "DATA\r\nx\n.\r\nMAIL FROM:<evil@x.example>\r\n\r\n.\r\nQUIT\r\n")
session("dsn_params", 0x04, [], [],
        "EHLO c\r\nMAIL FROM:<a@b.example> RET=HDRS ENVID=QQ314159 SIZE=100\r\n"
        "RCPT TO:<x@y.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x+2By@y.example\r\n"
        "RSET\r\nHELO c\r\nNOOP\r\nVRFY x\r\nHELP\r\nQUIT\r\n")
session("small_limits_errors", 0x02, [7], [],
        "EHLO " + "c" * 80 + "\r\nNOOP\nBOGUS\r\nEHLO c\r\nMAIL FROM:<a@b.example>\r\n"
        "RCPT TO:<1@y.example>\r\nRCPT TO:<2@y.example>\r\nRCPT TO:<3@y.example>\r\n"
        "RCPT TO:<4@y.example>\r\nDATA\r\n" + "x" * 90 + "\r\n" + "y" * 300 + "\r\n.\r\n")
session("smtputf8", 0, [], [],
        "EHLO c\r\nMAIL FROM:<\u00fc@b\u00fccher.example> SMTPUTF8\r\nRCPT TO:<postmaster>\r\n"
        "RCPT TO:<\"a b\"@[IPv6:::1]>\r\nRCPT TO:<x@[192.0.2.1]>\r\nDATA\r\n.\r\n")
session("require_tls_no_extensions", 0xa0, [], [],
        "HELO c\r\nMAIL FROM:<a@b.example>\r\nSTARTTLS\r\nBDAT 1 LAST\r\nx")

# reply_parser: line limit, piece lengths, then the server's bytes.
def replies(name, max_line, cuts, text):
    write("reply_parser", name, bytes([max_line]) + cycle(cuts) + text.encode())


replies("greeting", 0, [], "220 mx.example ESMTP ready\r\n")
replies("ehlo", 0, [3, 0, 17], "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
        "250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n")
replies("enhanced", 0, [], "550 5.1.1 user unknown\r\n451-4.7.1 greylisted\r\n451 4.7.1 try later\r\n")
replies("bare_lf", 0, [1], "250 ok\n354 go ahead\n221 2.0.0 bye\r\n")
replies("code_changes", 0, [], "250-a\r\n251 b\r\n")
replies("line_too_long", 4, [9], "250 " + "x" * 40 + "\r\n")
replies("no_text", 0, [], "250\r\n250-\r\n250 \r\n")

# address: the text after MAIL FROM: / RCPT TO:, or a bare address.
for name, text in [
    ("plain", "user@example.com"),
    ("path", "<user@example.com>"),
    ("null_path", "<>"),
    ("postmaster", "<Postmaster>"),
    ("quoted", "\"a b\\\"c\"@example.com"),
    ("literal_v4", "x@[192.0.2.1]"),
    ("literal_v6", "<x@[IPv6:2001:db8::1]>"),
    ("utf8", "\u00fc@b\u00fccher.example"),
    ("a_label", "user@xn--bcher-kva.example"),
    ("trailing_dot", "a.b.c@sub.example.org."),
]:
    write("address", name, text)

# config: the tests' files and the packaged one.
with open(os.path.join(ROOT, "..", "packaging", "volley.toml"), "rb") as f:
    write("config", "packaged", f.read())
write("config", "empty", "")
write("config", "relay", '''hostname = "relay.example"
shards = 2
delivery_port = 2526
delivery_log = "/tmp/d.log"
memory_budget = "512MiB"

[[listener]]
address = "127.0.0.1:2600"
protocol = "lmtp"
ack = "safe"

[ingest]
trusted_networks = ["10.0.0.0/8"]
relay_domains = ["*.example.com", "example.org"]
idle_timeout = "30s"

[resolver]
nameservers = ["127.0.0.1:5353"]

[scheduler]
policy = "oldest"

[general_queue]
retry_schedule = ["100ms", "1s"]
max_attempts = 3

[[queue]]
name = "big"
domains = ["big.example"]
mx = ["127.0.0.9", "127.0.0.10:2527"]
[queue.limits]
max_connections = 50
''')
write("config", "tls", '''[tls]
cert = "/etc/volley/cert.pem"
key = "/etc/volley/key.pem"

[[listener]]
address = "127.0.0.1:4650"
protocol = "smtps"
[[listener]]
address = "127.0.0.1:2587"
require_tls = true

[general_queue]
tls = "verify"
tls_ca_file = "/etc/volley/ca.pem"
tls_broken_for = "1d"
''')
write("config", "errors", '[[user]]\nname = "composer"\npassword_hash = "hunter2"\n'
      '[general_queue]\nidle_timeout = "5 fortnights"\ninitial_connections = 9\n'
      'max_connections_per_domain = 2\nshardz = 3\n')


# journal_recovery: frames as the journal writes them.
def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def frame(magic, payload):
    head = magic + struct.pack("<I", len(payload)) + payload
    return head + struct.pack("<I", crc32c(head))


def addr(a):
    return struct.pack("<H", len(a)) + a.encode()


def body_record(seq, sender, rcpts, body):
    payload = struct.pack("<Q", seq) + addr(sender) + struct.pack("<I", len(rcpts))
    payload += b"".join(addr(r) for r in rcpts) + body
    return frame(b"VBL1", payload)


def bits(n, finished):
    out = bytearray((n + 7) // 8)
    for i in finished:
        out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def checkpoint(next_seq, seg, off, entries):
    p = b"\x01" + struct.pack("<QQQQ", next_seq, seg, off, len(entries))
    for seq, eseg, eoff, n, done in entries:
        p += struct.pack("<QQQI", seq, eseg, eoff, n) + bits(n, done)
    return frame(b"VJL1", p)


def finished(facts):
    return frame(b"VJL1", b"\x02" + b"".join(struct.pack("<QI", s, i) for s, i in facts))


def journal(name, flags, files):
    """files: (name byte, bytes); the last takes the rest of the input."""
    out = bytes([flags, len(files) - 1])
    for k, (n, data) in enumerate(files):
        out += bytes([n])
        if k + 1 < len(files):
            out += struct.pack("<H", len(data))
    write("journal_recovery", name, out + b"".join(d for _, d in files))


BODY_1, JOURNAL_1, JOURNAL_2 = 2, 3, 5
r1 = body_record(1, "a@b.example", ["x@y.example", "z@y.example"], b"Subject: one\r\n\r\nhi\r\n")
r2 = body_record(2, "", ["p@q.example"], b"two\r\n")
pad = frame(b"VBL1", b"\x00" * 20)
journal("after_crash", 0, [(JOURNAL_1, checkpoint(1, 1, 0, []) + finished([(1, 0)])),
                           (BODY_1, r1 + r2)])
journal("checkpointed", 0, [(JOURNAL_2, checkpoint(3, 1, len(r1 + r2), [(1, 1, 0, 2, [0])])
                             + finished([(2, 0)])), (BODY_1, r1 + r2)])
journal("torn_tail", 0, [(BODY_1, r1 + r2[: len(r2) // 2])])
flipped = bytearray(r1 + pad + r2)
flipped[20] ^= 4
journal("flipped_bit", 0, [(JOURNAL_1, checkpoint(1, 1, 0, [])), (BODY_1, bytes(flipped))])
journal("fix_checksums", 1, [(JOURNAL_1, checkpoint(2, 1, 0, [(1, 1, 0, 3, [1])])),
                             (BODY_1, body_record(1, "s@x", ["a@x", "b@x", "c@x"], b"b"))])

# inject_request: request bodies as the injection API's tests post them.
write("inject_request", "whole", '{"envelope_sender": "news@c.example", "content": "Subject: {{ greeting }} {{ name }}\\n\\nDear {{ name }} of {{ city }},\\n{% for i in items %}* {{ i }}\\n{% endfor %}", "substitutions": {"greeting": "Hello", "items": ["a", "b"]}, "recipients": [{"email": "ann@d0.example", "name": "Ann", "substitutions": {"city": "Oslo"}}, {"email": "eve@d0.example", "substitutions": {"city": "x\\r\\nBcc: y"}}]}')
write("inject_request", "built", '{"envelope_sender": "news@c.example", "content": {"from": {"email": "n@c.example", "name": "N"}, "subject": "Hi {{ name }}", "headers": {"X-Id": "{{ id }}"}, "text_body": "Hi {{ name }}", "html_body": "<p>{{ name }}</p>", "attachments": [{"data": "aGk=", "base64": true, "content_type": "text/plain", "file_name": "a.txt"}]}, "recipients": [{"email": "z@d1.example", "name": "Zoë", "substitutions": {"id": 7}}]}')
write("inject_request", "static", '{"envelope_sender": "", "content": "Subject: {{ x }}\\n\\nbody", "template_dialect": "Static", "recipients": [{"email": "a@b.example"}]}')
write("inject_request", "loop", '{"envelope_sender": "a@b.example", "content": "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}", "recipients": [{"email": "a@b.example"}]}')
