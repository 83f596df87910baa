//! A whole run against a server under test that relays into a running
//! [`SimulatedInternet`]: drive the Composer load, show progress, wait until
//! every accepted message reached a sink or its expected end, and report.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::compose::{ComposeConfig, spawn_compose};
use crate::error::BenchError;
use crate::internet::SimulatedInternet;
use crate::load::{DomainMix, LoadSpec};
use crate::message::unix_micros;
use crate::procstat::process_usage;
use crate::report::{EngineUsage, Report, ReportInput};

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The Composer load.
    pub load: LoadSpec,
    /// Recipients' domains (normally the scenario's weights).
    pub mix: DomainMix,
    /// Seed of recipient and size choices.
    pub seed: u64,
    /// What is measured, for the report ("volley", "postfix", ...).
    pub label: String,
    /// Upper bound for the whole run: injection plus draining.
    pub timeout: Duration,
    /// How long to keep watching the sinks after the last expected message,
    /// so late duplicates are caught.
    pub settle: Duration,
    /// Print a progress line on stderr.
    pub progress: bool,
}

/// Waits until something accepts TCP connections at `addr`.
pub fn wait_for_listener(addr: SocketAddr, timeout: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(BenchError::io(format!("nothing listens at {addr}"), e));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Drives the load at `target` (which must deliver into `internet`), waits
/// for the sinks, and builds the report. `usage` is asked once, at the end,
/// for the server's CPU time and peak memory.
pub fn drive(
    internet: &SimulatedInternet,
    target: SocketAddr,
    settings: &RunSettings,
    usage: &mut dyn FnMut() -> Option<EngineUsage>,
) -> Result<Report, BenchError> {
    let start = Instant::now();
    let start_micros = unix_micros();
    let deadline = start + settings.timeout;
    let run_id = format!("run{start_micros}");
    let handle = spawn_compose(ComposeConfig {
        target,
        load: settings.load.clone(),
        mix: settings.mix.clone(),
        seed: settings.seed,
        run_id,
        timeout: settings.timeout,
        routes: Vec::new(),
        tls: None,
    })?;
    let progress = handle.progress().clone();
    let planned = settings.load.messages;
    let mut line = ProgressLine::new(settings.progress);
    while !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(200));
        line.show(
            start.elapsed(),
            planned,
            progress.accepted.load(Ordering::Relaxed),
            internet.delivered() as u64,
            throttled(internet),
        );
    }
    let outcome = handle.join()?;
    // Drain: until every accepted message is delivered or expected to bounce.
    let mut timed_out = false;
    let mut complete_since: Option<Instant> = None;
    loop {
        let acc = internet.accounting(&outcome.sent);
        let complete = acc.lost == 0;
        line.show(
            start.elapsed(),
            planned,
            outcome.summary.accepted,
            internet.delivered() as u64,
            throttled(internet),
        );
        if complete {
            let since = *complete_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= settings.settle {
                break;
            }
        } else {
            complete_since = None;
        }
        if Instant::now() >= deadline {
            timed_out = !complete;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    line.finish();
    let engine = usage();
    let deliveries = internet.deliveries();
    let last_delivery = deliveries.iter().map(|d| d.accepted_micros).max();
    let end_micros = last_delivery.unwrap_or_else(unix_micros).max(start_micros);
    let accounting = internet.accounting(&outcome.sent);
    let counters = internet.counters();
    Ok(Report::build(ReportInput {
        scenario: internet.scenario_name(),
        label: &settings.label,
        start_micros,
        end_micros,
        load: &settings.load,
        composer: outcome.summary,
        injected_micros: &outcome.injected_micros,
        deliveries: &deliveries,
        receivers: internet.receivers(),
        counters: &counters,
        engine,
        bench: process_usage(std::process::id()).ok(),
        accounting,
        timed_out,
    }))
}

fn throttled(internet: &SimulatedInternet) -> u64 {
    internet
        .counters()
        .iter()
        .map(|c| c.total.throttled())
        .sum()
}

/// One line on stderr, rewritten in place.
struct ProgressLine {
    on: bool,
    last_delivered: u64,
    last_at: Duration,
}

impl ProgressLine {
    fn new(on: bool) -> Self {
        Self {
            on,
            last_delivered: 0,
            last_at: Duration::ZERO,
        }
    }

    fn show(
        &mut self,
        elapsed: Duration,
        planned: u64,
        injected: u64,
        delivered: u64,
        throttled: u64,
    ) {
        if !self.on {
            return;
        }
        let dt = (elapsed - self.last_at).as_secs_f64();
        let rate = if dt > 0.0 {
            delivered.saturating_sub(self.last_delivered) as f64 / dt
        } else {
            0.0
        };
        self.last_delivered = delivered;
        self.last_at = elapsed;
        let width = 30;
        let done = if planned > 0 {
            ((delivered as f64 / planned as f64) * width as f64).min(width as f64) as usize
        } else {
            0
        };
        let bar: String = "#".repeat(done) + &".".repeat(width - done);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r[{bar}] {:>5.1}s injected {injected}/{planned} delivered {delivered} ({rate:.0}/s) throttled {throttled}   ",
            elapsed.as_secs_f64()
        );
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.on {
            eprintln!();
        }
    }
}
