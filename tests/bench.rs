//! `volley bench`: the README's first command runs the default scenario
//! against Volley and proves zero loss and zero duplicates, in bounded time.

use std::process::Command;
use std::time::{Duration, Instant};

use volley_bench::Report;

use crate::support::temp_path;

#[test]
fn default_bench_run_delivers_everything_exactly_once_within_a_minute() {
    let out = temp_path("bench-run");
    let started = Instant::now();
    let result = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["bench", "run", "--quiet", "--timeout", "60s", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        result.status.success(),
        "bench run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    assert!(elapsed < Duration::from_secs(90), "{elapsed:?}");
    let report = Report::load(&out.join("report.json")).unwrap();
    let a = &report.accounting;
    assert!(report.passed(), "{stdout}");
    assert_eq!(a.sent, report.load.messages, "{stdout}");
    assert_eq!(a.delivered + a.expected_bounces, a.sent, "{stdout}");
    assert_eq!((a.lost, a.duplicates), (0, 0));
    assert!(report.engine.is_some_and(|e| e.peak_rss_bytes > 0));
    assert!(stdout.contains("PASS"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg"));

    // A report compared with itself: every figure unchanged.
    let json = out.join("report.json");
    let cmp = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["bench", "compare"])
        .arg(&json)
        .arg(&json)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&cmp.stdout);
    assert!(cmp.status.success(), "{text}");
    assert!(
        text.contains("delivered/s (mean)") && text.contains("+0%"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
