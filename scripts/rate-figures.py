#!/usr/bin/env python3
"""Figures of the rate benchmark from `volley bench run` reports.

    rate-figures.py summary SCENARIO.toml REPORT.json...
    rate-figures.py settle REPORT.json DOMAIN AT_S CAPACITY
    rate-figures.py svg REPORT.html OUT_PREFIX

A domain's hidden capacity is what its sink can take at best: its rate limit,
or, when lower, its connection limit over the latency at full load
(latency + jitter/2 + latency_growth + data_delay): Little's law. It changes
at the scenario's [[change]] times. The shortest drain is the time the
slowest domain needs for what it accepted at that capacity; the run's share
of capacity is that over the actual drain (first to last delivery).
"""
import json
import sys
import tomllib


def load(path):
    with open(path) as f:
        return json.load(f)


def secs(text):
    text = str(text)
    for unit, f in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0), ("m", 60.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    return float(text or 0)


def capacity(c):
    rate = float(c.get("max_rate", 0)) or float("inf")
    conns = int(c.get("max_connections", 0))
    latency = (secs(c.get("latency", "0ms")) + secs(c.get("jitter", "0ms")) / 2
               + secs(c.get("latency_growth", "0ms")) + secs(c.get("data_delay", "0ms")))
    by_conns = conns / latency if conns and latency > 0 else float("inf")
    return min(rate, by_conns)


def capacities(scenario_path):
    """Each domain's hidden capacity over time: [(from_s, per_second), ...],
    the scenario's [[change]] entries applied in order."""
    with open(scenario_path, "rb") as f:
        s = tomllib.load(f)
    base = {}
    for d in s.get("domain", []):
        base[d["name"]] = dict(d.get("capacity", {}))
    for g in s.get("group", []):
        for i in range(g["count"]):
            base[f"{g['prefix']}{i}.{g.get('suffix', 'test')}"] = dict(g.get("capacity", {}))
    caps = {name: [(0.0, capacity(c))] for name, c in base.items()}
    for ch in sorted(s.get("change", []), key=lambda c: secs(c["at"])):
        name = ch["domain"]
        base[name].update(ch.get("set", {}))
        caps[name].append((secs(ch["at"]), capacity(base[name])))
    return caps


def drain_time(steps, messages):
    """The shortest time to take `messages` at a capacity that changes in steps."""
    left = float(messages)
    for i, (start, rate) in enumerate(steps):
        end = steps[i + 1][0] if i + 1 < len(steps) else float("inf")
        if rate == float("inf"):
            return start
        if rate > 0 and left <= rate * (end - start):
            return start + left / rate
        left -= rate * (end - start) if end != float("inf") else 0
    return float("inf")


def throttled(c):
    return c.get("refused_connections", 0) + c.get("rate_limited", 0)


def best_5s(series):
    if not series:
        return 0.0
    return max(sum(series[i:i + 5]) / min(5, len(series) - i) for i in range(len(series)))


def summary(scenario_path, paths):
    caps = capacities(scenario_path)
    for p in paths:
        r = load(p)
        t = r["totals"]
        acc = t["accepted"]
        # The shortest possible drain: the slowest domain at its capacity.
        bound = max((drain_time(caps.get(d["name"], [(0.0, float("inf"))]), d["counts"]["accepted"])
                     for d in r["domains"]), default=0.0)
        first = next((i for i, v in enumerate(r["delivered_per_second"]) if v), 0)
        last = len(r["delivered_per_second"])
        print(f"== {r['scenario']} / {r['label']}: {acc} delivered in {last - first} s "
              f"({r['delivered_rate']:.0f}/s mean); shortest drain at capacity {bound:.1f} s "
              f"= {bound / max(last - first, 1) * 100:.0f}% of capacity; "
              f"throttling replies {throttled(t)} = {throttled(t) / max(acc, 1) * 100:.2f}% of deliveries "
              f"(421 {t['refused_connections']}, 451 {t['rate_limited']})")
        print(f"   {'domain':<16} {'capacity/s':>10} {'best 5 s/s':>10} {'share':>6} {'throttles':>9}")
        for d in r["domains"][:6]:
            cap = caps.get(d["name"], [(0.0, float("inf"))])[0][1]
            b = best_5s(d["accepted_per_second"])
            print(f"   {d['name']:<16} {cap:>10.0f} {b:>10.0f} {b / cap * 100:>5.0f}% "
                  f"{throttled(d['counts']):>9}")


def settle(path, domain, at, cap):
    r = load(path)
    d = next(x for x in r["domains"] if x["name"] == domain)
    acc, thr = list(d["accepted_per_second"]), list(d["throttled_per_second"])
    n = max(len(acc), len(thr))
    acc += [0] * (n - len(acc))
    thr += [0] * (n - len(thr))
    print("accepted/throttled per second: "
          + " ".join(f"{i}:{acc[i]}/{thr[i]}" for i in range(n)))
    # Settled: from this second on, for 5 s, no throttling reply and the
    # accepted count at most the new capacity (+5%).
    for s in range(at, n - 5):
        if all(thr[i] == 0 and acc[i] <= cap * 1.05 for i in range(s, s + 5)):
            print(f"settled under {cap:.0f}/s {s - at} s after the change at {at} s")
            return
    print("did not settle within the run")


def svg(html_path, prefix):
    """Writes the report's charts as standalone SVG files (OUT_PREFIX-N.svg,
    with the legend's caption as a title), so the README can show them."""
    import re
    html = open(html_path).read()
    style = ".ax{font:11px system-ui,sans-serif;fill:#555}"
    figures = re.findall(r"<figure>(.*?)</figure>", html, re.S)
    n = 0
    for fig in figures:
        chart = re.search(r"<svg(.*?)>(.*?)</svg>", fig, re.S)
        if not chart:
            continue
        caption = re.search(r"<figcaption>(.*?)</figcaption>", fig, re.S)
        title = re.sub(r"<.*?>", "", caption.group(1)) if caption else ""
        n += 1
        with open(f"{prefix}-{n}.svg", "w") as f:
            f.write(f'<svg xmlns="http://www.w3.org/2000/svg"{chart.group(1)}>'
                    f"<title>{title}</title><style>{style}</style>"
                    f'<rect width="100%" height="100%" fill="white"/>{chart.group(2)}</svg>\n')
        print(f"{prefix}-{n}.svg: {title}")


if __name__ == "__main__":
    if sys.argv[1] == "summary":
        summary(sys.argv[2], sys.argv[3:])
    elif sys.argv[1] == "svg":
        svg(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "settle":
        settle(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(__doc__)
