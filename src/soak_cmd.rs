//! `volley bench soak`: Volley in durable mode under a steady Composer load
//! for a long time, with the simulated internet's faults over time and a
//! kill -9 every few minutes; a line per minute (memory, queue, deliveries,
//! throttling) and, at the end, the accounting of every accepted message.
//!
//! What happens when is planned by the bench library's soak module; this
//! driver starts and kills the processes, samples them and hands the
//! samples back to be judged.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use volley_bench::{
    ComposeConfig, DomainMix, MinuteRow, Scenario, SimulatedInternet, SoakEvent, SoakMeasures,
    SoakPlan, SoakSettings, SoakVerdict, duplicate_copies, spawn_compose, unix_micros,
    wait_for_listener,
};

use crate::bench_cmd::{BENCH_VOLLEY_CONFIG, free_port, start_volley, stop_child};

#[derive(Args)]
pub(crate) struct SoakArgs {
    /// Built-in scenario or a TOML file; its first four [[domain]] entries
    /// get the faults.
    #[arg(long, default_value = "soak")]
    scenario: String,
    /// How long the Composer sends.
    #[arg(long, default_value = "30m", value_parser = volley_units::parse_duration)]
    duration: Duration,
    /// One round of the four faults.
    #[arg(long, default_value = "5m", value_parser = volley_units::parse_duration)]
    cycle: Duration,
    /// How long each fault lasts (at most a fifth of the cycle).
    #[arg(long, default_value = "30s", value_parser = volley_units::parse_duration)]
    fault_for: Duration,
    /// A kill -9 of Volley this often (0s: never).
    #[arg(long, default_value = "3m", value_parser = volley_units::parse_duration)]
    kill_every: Duration,
    /// The Composer's rate as a share of the receivers' total capacity.
    #[arg(long, default_value_t = 0.7)]
    load_share: f64,
    /// Samples this soon after a (re)start do not count for memory flatness.
    #[arg(long, default_value = "30s", value_parser = volley_units::parse_duration)]
    warm_up: Duration,
    /// Most the heap may spread after warm-up (with the queue at its
    /// steady level), as a share of its smallest sample.
    #[arg(long, default_value_t = 0.10)]
    memory_spread: f64,
    /// Most a duplicated recipient's first copy may lie from a kill (the
    /// journal's window plus the sink's reply delay).
    #[arg(long, default_value = "100ms", value_parser = volley_units::parse_duration)]
    duplicate_window: Duration,
    /// How long the queue may take to drain once the Composer stops.
    #[arg(long, default_value = "3m", value_parser = volley_units::parse_duration)]
    drain: Duration,
    /// Where the journal, Volley's log and the soak's table go.
    #[arg(long, default_value = "soak-out")]
    out: PathBuf,
}

/// How often the driver looks at the clock, the plan and the processes.
const TICK: Duration = Duration::from_millis(200);
/// How often the resident set is read.
const RSS_EVERY: Duration = Duration::from_secs(1);
/// How often the queue of a domain whose fault is over is read.
const DRAIN_POLL: Duration = Duration::from_secs(2);
/// How often the accounting is read once the Composer is done.
const ACCOUNTING_EVERY: Duration = Duration::from_secs(5);
/// How long the sinks are watched after the last delivery, for late copies.
const SETTLE: Duration = Duration::from_secs(3);

/// The Volley child and what it takes to start it again.
struct Server<'a> {
    internet: &'a SimulatedInternet,
    config: PathBuf,
    listen: SocketAddr,
    admin: SocketAddr,
    extra: Vec<String>,
    log: PathBuf,
    child: Child,
    started: Instant,
}

impl<'a> Server<'a> {
    fn start(
        internet: &'a SimulatedInternet,
        config: PathBuf,
        journal: PathBuf,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let listen = free_port()?;
        let admin = free_port()?;
        let extra = vec![
            "--journal".to_string(),
            journal.display().to_string(),
            "--admin-listen".to_string(),
            admin.to_string(),
        ];
        let child = Self::spawn(internet, &config, listen, &log, &extra)?;
        Ok(Self {
            internet,
            config,
            listen,
            admin,
            extra,
            log,
            child,
            started: Instant::now(),
        })
    }

    fn spawn(
        internet: &SimulatedInternet,
        config: &std::path::Path,
        listen: SocketAddr,
        log: &std::path::Path,
        extra: &[String],
    ) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = start_volley(internet, config, listen, false, log, extra)?;
        wait_for_listener(listen, Duration::from_secs(30))?;
        Ok(child)
    }

    /// kill -9, then a start on the same journal; the moment of the kill.
    fn kill_and_restart(&mut self) -> anyhow::Result<u64> {
        let at = unix_micros();
        self.child.kill().context("killing volley serve")?;
        let _ = self.child.wait();
        self.child = Self::spawn(
            self.internet,
            &self.config,
            self.listen,
            &self.log,
            &self.extra,
        )?;
        self.started = Instant::now();
        Ok(at)
    }

    /// Volley's resident set now, and the anonymous part of it (the heap:
    /// what the rest, the executable's pages and mapped files, is not),
    /// bytes.
    fn memory(&self) -> Option<(u64, u64)> {
        volley_bench::process_memory(self.child.id()).ok()
    }

    /// Recipients of `domain` queued now (waiting, retrying, in flight),
    /// from the admin API; a domain without a queue has none.
    fn queued_for(&self, domain: &str) -> Option<u64> {
        let body = match http_get(self.admin, &format!("/api/v1/queues/{domain}")) {
            Ok(body) => body,
            Err(e)
                if e.downcast_ref::<crate::admin_client::Refused>()
                    .is_some_and(|r| r.status == 404) =>
            {
                return Some(0);
            }
            Err(_) => return None,
        };
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(
            ["waiting", "retrying", "in_flight"]
                .iter()
                .filter_map(|k| v[k].as_u64())
                .sum(),
        )
    }

    /// Recipients queued now, from the admin API's status.
    fn queued(&self) -> Option<u64> {
        self.status().map(|(queued, _)| queued)
    }

    /// Recipients queued now and the bytes held for messages (bodies and
    /// recipients, what the memory budget counts), from the admin API.
    fn status(&self) -> Option<(u64, u64)> {
        let body = http_get(self.admin, "/api/v1/status").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some((
            v["totals"]["queued"].as_u64()?,
            v["memory"]["held_bytes"].as_u64()?,
        ))
    }
}

/// The body of a plain `GET path` at `addr`, answered within 2 s.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    crate::admin_client::get_at(addr, path, Duration::from_secs(2))
}

/// Totals of the sinks: recipients accepted, throttling replies.
fn sink_totals(internet: &SimulatedInternet) -> (u64, u64) {
    internet.counters().iter().fold((0, 0), |(a, t), c| {
        (a + c.total.accepted, t + c.total.throttled())
    })
}

pub(crate) fn run(args: SoakArgs) -> anyhow::Result<()> {
    let mut scenario = Scenario::load(&args.scenario)?;
    let settings = SoakSettings {
        duration: args.duration,
        cycle: args.cycle,
        fault_for: args.fault_for,
        kill_every: args.kill_every,
        load_share: args.load_share,
        warm_up: args.warm_up,
        memory_spread: args.memory_spread,
        duplicate_window: args.duplicate_window,
    };
    let plan = SoakPlan::new(&scenario, &settings)?;
    plan.apply(&mut scenario);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let journal = args.out.join("journal");
    if journal.exists() {
        std::fs::remove_dir_all(&journal)
            .with_context(|| format!("removing the old {}", journal.display()))?;
    }
    let config = args.out.join("volley.toml");
    let delivery_log = args.out.join("delivery.log");
    let _ = std::fs::remove_file(&delivery_log);
    // The delivery log, across every restart, says which process
    // delivered what, when a duplicate needs explaining.
    // (A JSON string is a TOML basic string.)
    let delivery_log_line = serde_json::to_string(&delivery_log.display().to_string())?;
    std::fs::write(
        &config,
        format!("delivery_log = {delivery_log_line}\n{BENCH_VOLLEY_CONFIG}"),
    )?;
    let log = args.out.join("volley.log");
    let _ = std::fs::remove_file(&log);

    let internet = SimulatedInternet::start(&scenario)?;
    let mut server = Server::start(&internet, config, journal, log.clone())?;
    let mut load = scenario.load.clone();
    load.messages = 0;
    load.duration = Some(settings.duration);
    load.rate = plan.rate;
    load.validate()?;
    let compose = spawn_compose(ComposeConfig {
        target: server.listen,
        load,
        mix: DomainMix::of_scenario(internet.domains())?,
        seed: scenario.seed,
        run_id: format!("soak{}", unix_micros()),
        timeout: settings.duration + args.drain,
        routes: Vec::new(),
        tls: None,
    })?;
    let progress = compose.progress().clone();
    let mut compose = Some(compose);
    let header = format!(
        "soak: scenario {}, {} s at {:.0} msg/s ({:.0}% of capacity), faults every {} s for {} s, kill -9 every {} s; durable mode; log {}",
        scenario.name,
        settings.duration.as_secs(),
        plan.rate,
        100.0 * settings.load_share,
        settings.cycle.as_secs() / 5,
        settings.fault_for.as_secs(),
        settings.kill_every.as_secs(),
        log.display()
    );
    println!("{header}\n{}", MinuteRow::HEADER);
    let mut table = vec![header, MinuteRow::HEADER.to_string()];

    // Every memory sample: seconds, resident set, heap, queued, held for
    // messages (bytes), and whether it counts for flatness.
    let samples_path = args.out.join("memory.tsv");
    let mut samples = std::io::BufWriter::new(
        std::fs::File::create(&samples_path)
            .with_context(|| format!("creating {}", samples_path.display()))?,
    );
    writeln!(samples, "secs\trss\theap\tqueued\theld\tjudged")?;
    let start = Instant::now();
    let mut events = plan.events.iter().peekable();
    let mut pending_drains: Vec<_> = plan.faults.iter().collect();
    let mut next_drain_poll = Instant::now();
    let mut measures = SoakMeasures::default();
    // About one second of the load: what stays queued when nothing waits.
    let steady_queue = plan.rate.ceil() as u64;
    let mut row = MinuteRow {
        minute: 1,
        ..MinuteRow::default()
    };
    let (mut accepted_before, mut delivered_before, mut throttled_before) = (0, 0, 0);
    let mut next_rss = Instant::now();
    // When the queue was last above its steady level.
    let mut unsettled_at = Instant::now();
    let mut sent = None;
    let mut drained_since: Option<Instant> = None;
    let mut next_accounting = Instant::now();
    let deadline = start + settings.duration + args.drain;
    loop {
        std::thread::sleep(TICK);
        let now = start.elapsed();
        if Instant::now() >= next_drain_poll {
            next_drain_poll += DRAIN_POLL;
            pending_drains.retain(|f| {
                if f.until > now {
                    return true;
                }
                let drained = server
                    .queued_for(&f.domain)
                    .is_some_and(|q| q <= f.drained_at_most);
                if drained {
                    measures.drains.push(((*f).clone(), Some(now - f.until)));
                } else if now >= f.drain_by {
                    measures.drains.push(((*f).clone(), None));
                } else {
                    return true;
                }
                false
            });
        }
        if Instant::now() >= next_rss {
            next_rss += RSS_EVERY;
            if let Some((rss, anon)) = server.memory() {
                row.rss_max = row.rss_max.max(rss);
                row.anon_max = row.anon_max.max(anon);
                // Memory is compared where the queue is back to its
                // steady level: a fault's backlog is held on purpose.
                let status = server.status();
                let queued = status.map(|(q, _)| q);
                if queued.is_none_or(|q| q > steady_queue) {
                    unsettled_at = Instant::now();
                }
                // Only under the load: once the Composer is done, idle
                // connections close and the heap shrinks.
                let judged = sent.is_none()
                    && server.started.elapsed() >= settings.warm_up
                    && start.elapsed() >= settings.warm_up
                    && unsettled_at.elapsed() >= volley_bench::SOAK_SETTLE;
                if let (true, Some((_, held))) = (judged, status) {
                    measures
                        .memory_after_warm_up
                        .push(volley_bench::MemorySample { rss, anon, held });
                }
                writeln!(
                    samples,
                    "{:.0}\t{rss}\t{anon}\t{}\t{}\t{judged}",
                    now.as_secs_f64(),
                    queued.map_or("-".into(), |q| q.to_string()),
                    status.map_or("-".into(), |(_, held)| held.to_string()),
                )?;
            }
        }
        if let Some(c) = compose.take_if(|c| c.is_finished()) {
            sent = Some(c.join()?.sent);
        }
        let minute_over = now >= Duration::from_secs(60 * u64::from(row.minute));
        // The whole accounting is costly with a million records: read
        // it every few seconds, and only once the Composer is done.
        if drained_since.is_none() && Instant::now() >= next_accounting {
            next_accounting += ACCOUNTING_EVERY;
            let all_in = sent.as_ref().is_some_and(|s: &Vec<_>| {
                let a = internet.accounting(s);
                a.lost == 0 && a.delivered + a.expected_bounces + a.uncertain_undelivered >= a.sent
            });
            if all_in {
                drained_since = Some(Instant::now());
            }
        }
        let done =
            drained_since.is_some_and(|t| t.elapsed() >= SETTLE) || Instant::now() >= deadline;
        if minute_over || done {
            let accepted = progress.accepted.load(std::sync::atomic::Ordering::Relaxed);
            let (delivered, throttled) = sink_totals(&internet);
            let from = Duration::from_secs(60 * u64::from(row.minute - 1));
            row.queued = server.queued();
            row.accepted = accepted - accepted_before;
            row.delivered = delivered - delivered_before;
            row.throttled = throttled - throttled_before;
            row.faults = plan
                .faults
                .iter()
                .filter(|f| f.from < now && f.until > from)
                .map(|f| format!("{} ({})", f.kind, f.domain))
                .collect();
            (accepted_before, delivered_before, throttled_before) =
                (accepted, delivered, throttled);
            println!("{}", row.line());
            table.push(row.line());
            row = MinuteRow {
                minute: row.minute + 1,
                ..MinuteRow::default()
            };
        }
        if done {
            break;
        }
        // After the minute's row: a kill due at a minute's end counts in
        // the next minute, and the row reads the queue before it.
        while let Some((_, event)) = events.next_if(|(at, _)| *at <= now) {
            match event {
                SoakEvent::DnsOutage { domain, on } => {
                    internet.set_dns_outage(domain, *on);
                }
                SoakEvent::Kill => {
                    measures.kills.push(server.kill_and_restart()?);
                    row.restarts += 1;
                }
            }
        }
    }
    measures.queued_at_end = server.queued();
    stop_child(&mut server.child);
    let sent = match (sent, compose) {
        (Some(s), _) => s,
        (None, Some(c)) => c.join()?.sent,
        (None, None) => Vec::new(),
    };
    let deliveries = internet.deliveries();
    measures.accounting = internet.accounting(&sent);
    measures.duplicates = duplicate_copies(&deliveries);
    let verdict = SoakVerdict::judge(&measures, &settings);
    let a = &measures.accounting;
    let seen = internet
        .counters()
        .iter()
        .fold(volley_bench::Counts::default(), |mut all, c| {
            all += &c.total;
            all
        });
    let summary = format!(
        "accepted {} messages, delivered {}, expected bounces {}, uncertain and not delivered {}; {} kills\n\
         faults as the sinks saw them: {} transactions dropped after the data, {} connections reset by hosts that were down, {} throttling replies\n{verdict}",
        a.sent,
        a.delivered,
        a.expected_bounces,
        a.uncertain_undelivered,
        measures.kills.len(),
        seen.dropped,
        seen.reset_connections,
        seen.throttled(),
    );
    println!("{summary}");
    table.push(summary);
    let report = args.out.join("soak.txt");
    std::fs::write(&report, table.join("\n") + "\n")?;
    samples.flush()?;
    println!(
        "table: {}; memory samples: {}",
        report.display(),
        samples_path.display()
    );
    if !verdict.passed {
        bail!("the soak failed: see the verdict above");
    }
    Ok(())
}
