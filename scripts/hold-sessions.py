#!/usr/bin/env python3
"""Holds SESSIONS SMTP sessions open to ADDR (each greeted and past EHLO),
then times one fresh session with Python's smtplib: connect to greeting,
and connect to the 250 after its message. Then checks that every held
session still answers NOOP, and prints one line of figures.

    hold-sessions.py 127.0.0.1:2525 10000
"""
import selectors
import smtplib
import socket
import sys
import time


def read_reply(sock, buf=b""):
    """Reads one whole (possibly multi-line) reply; returns (reply, rest)."""
    while True:
        lines = buf.split(b"\r\n")
        for i, line in enumerate(lines[:-1]):
            if len(line) >= 4 and line[3:4] == b" ":
                end = sum(len(l) + 2 for l in lines[: i + 1])
                return buf[:end], buf[end:]
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed by the server: %r" % buf)
        buf += chunk


def command_all(socks, line, expect):
    """Sends `line` on every socket, then reads every reply (pipelined over
    the sessions, so the round trips overlap)."""
    for s in socks:
        s.sendall(line)
    bad = 0
    for s in socks:
        reply, _ = read_reply(s)
        if not reply.startswith(expect):
            bad += 1
    return bad


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    port, count = int(port), int(sys.argv[2])
    started = time.monotonic()
    socks = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=60)
        socks.append(s)
    not_greeted = 0
    for s in socks:
        greeting, _ = read_reply(s)
        if not greeting.startswith(b"220"):
            not_greeted += 1
    refused_ehlo = command_all(socks, b"EHLO held.test\r\n", b"250")
    held_in = time.monotonic() - started

    fresh = time.monotonic()
    client = smtplib.SMTP(host, port, timeout=10)
    greeted_in = time.monotonic() - fresh
    client.ehlo("fresh.test")
    client.sendmail("news@composer.test", ["user@fresh.test"],
                    b"Subject: fresh\r\n\r\nA fresh session among the held ones.\r\n")
    served_in = time.monotonic() - fresh
    client.quit()

    refused_noop = command_all(socks, b"NOOP\r\n", b"250")
    for s in socks:
        s.close()
    print("held %d sessions (greeted and past EHLO in %.1f s; %d not greeted, %d EHLO refused); "
          "fresh session: greeting in %.3f s, message accepted in %.3f s; "
          "held sessions answering NOOP afterwards: %d of %d"
          % (count, held_in, not_greeted, refused_ehlo, greeted_in, served_in,
             count - refused_noop, count))
    ok = not_greeted == 0 and refused_ehlo == 0 and refused_noop == 0 and served_in < 1.0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
