//! The report as one self-contained HTML page: inline CSS and SVG charts,
//! no scripts, no network, so it opens anywhere and can be mailed around.

use std::fmt::Write as _;

use crate::report::{Report, capacity_text, rate, receiver_label};

const W: f64 = 720.0;
const H: f64 = 220.0;
const PAD_L: f64 = 56.0;
const PAD_B: f64 = 28.0;
const PAD_T: f64 = 22.0;
const PAD_R: f64 = 12.0;

/// One line of a chart.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    values: Vec<f64>,
    dashed: bool,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart of per-second series (a capacity drawn dashed).
fn line_chart(title: &str, y_unit: &str, series: &[Series<'_>]) -> String {
    let len = series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0f64, f64::max);
    let max = if max <= 0.0 { 1.0 } else { max * 1.1 };
    let x = |i: usize| PAD_L + (W - PAD_L - PAD_R) * i as f64 / (len - 1) as f64;
    let y = |v: f64| PAD_T + (H - PAD_T - PAD_B) * (1.0 - v / max);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">"#,
        escape(title)
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{PAD_L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end" class="ax">{}</text>"##,
            W - PAD_R,
            PAD_L - 4.0,
            y(v) + 4.0,
            fmt_num(v),
            y = y(v)
        );
    }
    let step = (len / 10).max(1);
    for i in (0..len).step_by(step) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" class="ax">{i}s</text>"#,
            x(i),
            H - 8.0
        );
    }
    let _ = write!(
        svg,
        r#"<text x="4" y="12" class="ax">{}</text>"#,
        escape(y_unit)
    );
    for s in series {
        // Seconds past the end of a series are zeros (nothing happened).
        let points: Vec<String> = (0..len)
            .map(|i| {
                let v = s.values.get(i).copied().unwrap_or(0.0);
                format!("{:.1},{:.1}", x(i), y(v))
            })
            .collect();
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="2"{dash} points="{}"/>"#,
            s.color,
            points.join(" ")
        );
    }
    svg.push_str("</svg><div class=\"legend\">");
    for s in series {
        let _ = write!(
            svg,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            s.color,
            escape(s.name)
        );
    }
    svg.push_str("</div></figure>");
    svg
}

/// Horizontal bars, one per (label, value).
fn bar_chart(title: &str, unit: &str, bars: &[(&str, f64)]) -> String {
    let max = bars.iter().map(|b| b.1).fold(0.0f64, f64::max).max(1e-9);
    let row = 24.0;
    let h = row * bars.len() as f64 + 8.0;
    let label_w = 90.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {W} {h}" width="{W}" height="{h}" role="img">"#,
        escape(title)
    );
    for (i, (label, v)) in bars.iter().enumerate() {
        let top = 4.0 + row * i as f64;
        let w = (W - label_w - 120.0) * v / max;
        let _ = write!(
            svg,
            r##"<text x="{}" y="{:.1}" text-anchor="end" class="ax">{}</text><rect x="{label_w}" y="{top:.1}" width="{w:.1}" height="{}" fill="#4a7bd0"/><text x="{:.1}" y="{:.1}" class="ax">{} {}</text>"##,
            label_w - 6.0,
            top + 15.0,
            escape(label),
            row - 6.0,
            label_w + w + 6.0,
            top + 15.0,
            fmt_num(*v),
            escape(unit)
        );
    }
    svg.push_str("</svg></figure>");
    svg
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn floats(v: &[u64]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

impl Report {
    /// The report as one HTML page with inline SVG charts.
    pub fn html(&self) -> String {
        let mut h = String::new();
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let _ = write!(
            h,
            r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>volley bench: {scenario} ({verdict})</title><style>
body{{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}}
h1{{font-size:20px}} h2{{font-size:16px;margin-top:28px}}
table{{border-collapse:collapse}} td,th{{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}}
td:first-child,th:first-child{{text-align:left}}
.ax{{font-size:11px;fill:#555}} figure{{margin:12px 0}} figcaption{{font-weight:600}}
.legend span{{margin-right:16px}} .legend i{{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}}
.pass{{color:#1a7f37;font-weight:700}} .fail{{color:#c62828;font-weight:700}}
pre{{background:#f6f6f6;padding:12px;overflow:auto}}
</style></head><body>
<h1>volley bench: {label} on scenario <code>{scenario}</code> — <span class="{cls}">{verdict}</span></h1>
"#,
            scenario = escape(&self.scenario),
            label = escape(&self.label),
            cls = verdict.to_lowercase(),
        );
        let _ = write!(h, "<pre>{}</pre>", escape(&self.summary()));
        h.push_str("<h2>Throughput</h2>");
        h.push_str(&line_chart(
            "Messages per second: accepted by the server under test (injected) and accepted at the sinks (delivered)",
            "msg/s",
            &[
                Series {
                    name: "injected",
                    color: "#9e9e9e",
                    values: floats(&self.injected_per_second),
                    dashed: false,
                },
                Series {
                    name: "delivered",
                    color: "#1a73e8",
                    values: floats(&self.delivered_per_second),
                    dashed: false,
                },
            ],
        ));
        h.push_str("<h2>End-to-end latency (injection to acceptance at the sink)</h2>");
        let l = &self.latency;
        h.push_str(&bar_chart(
            &format!("{} messages", l.count),
            "ms",
            &[
                ("mean", l.mean_ms),
                ("p50", l.p50_ms),
                ("p90", l.p90_ms),
                ("p99", l.p99_ms),
                ("p99.9", l.p999_ms),
                ("max", l.max_ms),
            ],
        ));
        h.push_str("<h2>Largest receivers (a domain, or a provider for all of its domains): deliveries and throttling against capacity</h2>");
        for d in self.domains.iter().take(6) {
            h.push_str(&line_chart(
                &format!(
                    "{} (capacity {} conns,rate{}; peak {} connections)",
                    receiver_label(d),
                    capacity_text(d),
                    if d.capacity_changes > 0 {
                        ", * changes during the run"
                    } else {
                        ""
                    },
                    d.peak_connections
                ),
                "rcpt/s",
                &[
                    Series {
                        name: "rate limit",
                        color: "#9e9e9e",
                        values: d.max_rate_per_second.clone(),
                        dashed: true,
                    },
                    Series {
                        name: "accepted",
                        color: "#1a73e8",
                        values: floats(&d.accepted_per_second),
                        dashed: false,
                    },
                    Series {
                        name: "throttled (421 + 451)",
                        color: "#d93025",
                        values: floats(&d.throttled_per_second),
                        dashed: false,
                    },
                ],
            ));
        }
        h.push_str("<h2>All receivers</h2><table><tr><th>domain or provider</th><th>capacity</th><th>accepted</th><th>421</th><th>451 rate</th><th>greylisted</th><th>550</th><th>dropped</th><th>peak conns</th><th>throttled %</th></tr>");
        for d in &self.domains {
            let c = &d.counts;
            let tried = c.accepted + c.throttled();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td></tr>",
                escape(&receiver_label(d)),
                escape(&capacity_text(d)),
                c.accepted,
                c.refused_connections,
                c.rate_limited,
                c.greylisted,
                c.unknown,
                c.dropped,
                d.peak_connections,
                rate(c.throttled() * 100, tried as f64)
            );
        }
        h.push_str("</table>");
        let _ = writeln!(
            h,
            "<h2>Load</h2><pre>{}</pre></body></html>",
            escape(&toml::to_string(&self.load).unwrap_or_default())
        );
        h
    }
}

#[cfg(test)]
mod tests {
    use crate::report::tests::sample;

    #[test]
    fn html_is_self_contained_with_charts() {
        let page = sample().html();
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("<svg") && page.contains("<polyline"));
        assert!(page.contains("a.test"));
        assert!(
            !page.contains("http://") && !page.contains("https://") && !page.contains("<script")
        );
        assert!(page.trim_end().ends_with("</html>"));
    }
}
