#!/usr/bin/env python3
"""Slowloris against an SMTP server at ADDR: UNTRUSTED connections from
untrusted loopback addresses (127.0.0.10 and up, 100 per address) and
TRUSTED ones from 127.0.0.1, each sending its EHLO one octet every
INTERVAL seconds, for SECONDS. Meanwhile a fresh session from 127.0.0.2
(trusted) is timed every 100 ms from connect to the 250 after EHLO.

Prints what the server answered the slow connections (greetings, and how
long each took), how many of the trusted ones the command timeout closed
and when, and the fresh sessions' times; exits non-zero if an untrusted
connection was greeted 220, a greeting took 1 s or more, or a fresh
session took 1 s or more.

    slowloris.py 127.0.0.1:2525 5000 5000 3 40
"""
import selectors
import socket
import sys
import threading
import time


def read_reply(sock, timeout=5.0):
    """One whole reply on a blocking socket, or '' at EOF."""
    sock.settimeout(timeout)
    buf = b""
    while True:
        lines = buf.split(b"\r\n")
        for line in lines[:-1]:
            if len(line) >= 4 and line[3:4] == b" ":
                return buf.decode("latin-1")
        chunk = sock.recv(4096)
        if not chunk:
            return buf.decode("latin-1")
        buf += chunk


def probe(addr, stop, times, failures):
    """A fresh trusted session every 100 ms: connect, 220, EHLO, 250."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.settimeout(5)
            s.connect(addr)
            greeting = read_reply(s)
            s.sendall(b"EHLO probe.test\r\n")
            ehlo = read_reply(s)
            took = time.monotonic() - started
            if not greeting.startswith("220") or not ehlo.startswith("250"):
                failures.append(f"{greeting.strip()!r} {ehlo.strip()!r}")
            times.append(took)
            s.sendall(b"QUIT\r\n")
            s.close()
        except OSError as e:
            failures.append(str(e))
        stop.wait(0.1)


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    addr = (host, int(port))
    untrusted, trusted = int(sys.argv[2]), int(sys.argv[3])
    interval, seconds = float(sys.argv[4]), float(sys.argv[5])

    stop = threading.Event()
    times, failures = [], []
    prober = threading.Thread(target=probe, args=(addr, stop, times, failures))
    prober.start()

    sel = selectors.DefaultSelector()
    # Per connection: kind, opened at, greeting, greeted after, closed after.
    conns = {}
    start = time.monotonic()
    sources = [("untrusted", f"127.0.0.{10 + i // 100}") for i in range(untrusted)]
    sources += [("trusted", "127.0.0.1")] * trusted
    for kind, source in sources:
        s = socket.socket()
        s.bind((source, 0))
        s.setblocking(False)
        try:
            s.connect(addr)
        except BlockingIOError:
            pass
        conns[s] = {"kind": kind, "opened": time.monotonic(), "buf": b"",
                    "greeting": None, "greeted": None, "closed": None, "sent": 0}
        sel.register(s, selectors.EVENT_READ)
    opened_in = time.monotonic() - start

    line = b"EHLO slowloris.test\r\n"
    next_octet = time.monotonic() + interval
    deadline = start + seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.05):
            s, c = key.fileobj, conns[key.fileobj]
            try:
                chunk = s.recv(4096)
            except (ConnectionResetError, BlockingIOError):
                chunk = b""
            if not chunk:
                c["closed"] = time.monotonic() - c["opened"]
                sel.unregister(s)
                s.close()
                continue
            c["buf"] += chunk
            if c["greeting"] is None and b"\r\n" in c["buf"]:
                c["greeting"] = c["buf"][:3].decode("latin-1")
                c["greeted"] = time.monotonic() - c["opened"]
        if time.monotonic() >= next_octet:
            next_octet += interval
            for s, c in conns.items():
                if c["closed"] is None and c["greeting"] == "220" and c["sent"] < len(line):
                    try:
                        s.send(line[c["sent"]:c["sent"] + 1])
                        c["sent"] += 1
                    except OSError:
                        pass
    stop.set()
    prober.join()

    ok = True
    for kind in ("untrusted", "trusted"):
        group = [c for c in conns.values() if c["kind"] == kind]
        greetings = {}
        for c in group:
            g = c["greeting"] or "none"
            greetings[g] = greetings.get(g, 0) + 1
        slowest = max((c["greeted"] for c in group if c["greeted"] is not None), default=0.0)
        closed = [c["closed"] for c in group if c["greeting"] == "220" and c["closed"] is not None]
        print(f"{kind}: {len(group)} connections; greetings {dict(sorted(greetings.items()))}; "
              f"slowest greeting {slowest * 1e3:.0f} ms; "
              f"greeted 220 and later closed by the server: {len(closed)}"
              + (f" (after {min(closed):.1f}-{max(closed):.1f} s)" if closed else ""))
        if slowest >= 1.0:
            ok = False
        if kind == "untrusted" and greetings.get("220"):
            ok = False
    times.sort()
    if times:
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        print(f"fresh sessions: {len(times)} timed, median {times[len(times) // 2] * 1e3:.1f} ms, "
              f"p99 {p99 * 1e3:.1f} ms, worst {times[-1] * 1e3:.1f} ms; failures {len(failures)}")
        if times[-1] >= 1.0:
            ok = False
    else:
        ok = False
    if failures:
        print("failures:", failures[:5])
        ok = False
    print(f"opened {len(conns)} connections in {opened_in:.1f} s; run {seconds:.0f} s")
    print("PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
