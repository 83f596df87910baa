//! `volley bench`: the load generator, the simulated internet, whole runs
//! against Volley, and report comparison.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use volley_bench::{
    ComposeConfig, DEFAULT_SCENARIO, Delivery, DomainMix, EngineUsage, InternetOptions, LoadSpec,
    Protocol, Report, RunSettings, Scenario, SentRecord, SimulatedInternet, compare, drive,
    is_expected_bounce, load_jsonl, parse_routes, process_usage, reconcile, save_jsonl,
    spawn_compose, unix_micros, wait_for_listener,
};

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Start the simulated internet and Volley, drive the Composer load,
    /// wait for every message to reach a sink or its expected end, report.
    Run(Box<RunArgs>),
    /// Drive the Composer load at any SMTP or LMTP server.
    Compose(Box<ComposeArgs>),
    /// Only the simulated internet (DNS and MX sinks), to point another MTA at.
    Internet(InternetArgs),
    /// Volley in durable mode under a steady load for a long time, with
    /// faults over time and a kill -9 every few minutes: a line per minute
    /// and the accounting at the end.
    Soak(Box<crate::soak_cmd::SoakArgs>),
    /// Two JSON reports side by side.
    Compare {
        /// The first report (the baseline).
        a: PathBuf,
        /// The second report.
        b: PathBuf,
    },
    /// Loss and duplicate accounting of a `compose --sent-out` file against
    /// an `internet --received-out` file.
    Check {
        /// Scenario the internet ran (for the expected unknown mailboxes).
        scenario: String,
        /// JSON lines written by `compose --sent-out`.
        sent: PathBuf,
        /// JSON lines written by `internet --received-out`.
        received: PathBuf,
    },
    /// Write a test CA (ca.pem) and a certificate it signs for 127.0.0.1
    /// and localhost (cert.pem, key.pem) into DIR, for TLS benchmarks.
    Certs {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// List the built-in scenarios, or print one as TOML to start a file from.
    Scenarios {
        /// A built-in scenario to print.
        name: Option<String>,
    },
}

/// Flags that shape the load, shared by `run` and `compose`; unset ones come
/// from the scenario.
#[derive(Args, Clone, Default)]
pub(crate) struct LoadArgs {
    /// Messages to send.
    #[arg(long)]
    messages: Option<u64>,
    /// Stop sending after this long (e.g. 30s).
    #[arg(long, value_parser = volley_units::parse_duration)]
    duration: Option<Duration>,
    /// Concurrent connections.
    #[arg(long)]
    connections: Option<u32>,
    /// One command per round trip.
    #[arg(long)]
    no_pipelining: bool,
    /// Speak LMTP instead of SMTP.
    #[arg(long)]
    lmtp: bool,
    /// Smallest body in bytes.
    #[arg(long)]
    body_min: Option<usize>,
    /// Largest body in bytes.
    #[arg(long)]
    body_max: Option<usize>,
    /// Fixed rate, messages per second (default: as fast as accepted).
    #[arg(long)]
    rate: Option<f64>,
    /// Body template file ({name}, {number}, {email}, {id} are filled in).
    #[arg(long)]
    template: Option<PathBuf>,
    /// Recipients' domain with a weight, e.g. big.test:40 (repeatable).
    #[arg(long = "domain", value_name = "DOMAIN[:WEIGHT]")]
    domains: Vec<String>,
    /// Spread recipients over N domains d0.test ... by a Zipf law.
    #[arg(long, value_name = "N")]
    zipf: Option<usize>,
    /// Exponent of the Zipf law.
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// Seed of recipient and size choices.
    #[arg(long)]
    seed: Option<u64>,
}

impl LoadArgs {
    fn apply(&self, mut load: LoadSpec) -> anyhow::Result<LoadSpec> {
        if let Some(v) = self.messages {
            load.messages = v;
        }
        if self.duration.is_some() {
            load.duration = self.duration;
            if self.messages.is_none() {
                load.messages = 0;
            }
        }
        if let Some(v) = self.connections {
            load.connections = v;
        }
        if self.no_pipelining {
            load.pipelining = false;
        }
        if self.lmtp {
            load.protocol = Protocol::Lmtp;
        }
        if let Some(v) = self.body_min {
            load.body_min = v;
            load.body_max = load.body_max.max(v);
        }
        if let Some(v) = self.body_max {
            load.body_max = v;
            load.body_min = load.body_min.min(v);
        }
        if let Some(v) = self.rate {
            load.rate = v;
        }
        if let Some(path) = &self.template {
            load.template = std::fs::read_to_string(path)
                .with_context(|| format!("reading template {}", path.display()))?
                .replace("\r\n", "\n")
                .replace('\n', "\r\n");
        }
        load.validate()?;
        Ok(load)
    }

    fn mix(&self, scenario: Option<&Scenario>) -> anyhow::Result<DomainMix> {
        if !self.domains.is_empty() {
            let entries = self
                .domains
                .iter()
                .map(|d| DomainMix::parse_entry(d))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(DomainMix::weighted(entries)?);
        }
        if let Some(n) = self.zipf {
            return Ok(DomainMix::zipf(n, self.zipf_s, "test")?);
        }
        match scenario {
            Some(s) => Ok(DomainMix::of_scenario(&s.domains()?)?),
            None => bail!("say where recipients go: --scenario, --domain or --zipf"),
        }
    }
}

/// How the simulated internet's MX sinks listen (`bench run` and `bench internet`).
#[derive(Args)]
pub(crate) struct SinkArgs {
    /// Port of every MX sink (0: any free port; 25 for MTAs that cannot
    /// deliver to another port).
    #[arg(long, default_value_t = 0)]
    sink_port: u16,
    /// Threads serving the MX sinks.
    #[arg(long, default_value_t = 1)]
    sink_threads: usize,
    /// Every MX sink offers STARTTLS with this certificate chain (PEM;
    /// `volley bench certs` makes one).
    #[arg(long, value_name = "FILE", requires = "sink_tls_key")]
    sink_tls_cert: Option<PathBuf>,
    /// The sinks' private key (PEM).
    #[arg(long, value_name = "FILE", requires = "sink_tls_cert")]
    sink_tls_key: Option<PathBuf>,
}

impl SinkArgs {
    /// Starts the scenario's simulated internet with these sinks.
    fn start(&self, scenario: &Scenario) -> anyhow::Result<SimulatedInternet> {
        let tls = match (&self.sink_tls_cert, &self.sink_tls_key) {
            (Some(cert), Some(key)) => Some(volley_bench::server_config_from_files(cert, key)?),
            _ => None,
        };
        let options = InternetOptions {
            sink_port: self.sink_port,
            sink_threads: self.sink_threads,
            tls,
        };
        Ok(SimulatedInternet::start_with(scenario, &options)?)
    }
}

#[derive(Args)]
pub(crate) struct RunArgs {
    /// Built-in scenario (uniform, realistic, hostile, provider-shared, provider-per-domain) or a TOML file.
    scenario: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
    /// Where to write report.json and report.html.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Upper bound for the whole run.
    #[arg(long, default_value = "120s", value_parser = volley_units::parse_duration)]
    timeout: Duration,
    /// Drive an MTA that is already running at HOST:PORT (and delivers into
    /// this run's internet: use --sink-port and point it at the printed DNS
    /// server) instead of starting Volley.
    #[arg(long, value_name = "HOST:PORT")]
    external: Option<SocketAddr>,
    /// Label of the measured MTA in the report.
    #[arg(long)]
    label: Option<String>,
    #[command(flatten)]
    sinks: SinkArgs,
    /// Configuration file for `volley serve` (default: the bench's own,
    /// written to OUT/volley.toml: retries after 1 s, 2 s, 5 s instead of
    /// minutes, so throttled mail drains within the run).
    #[arg(long, value_name = "FILE")]
    volley_config: Option<PathBuf>,
    /// Extra argument for `volley serve` (repeatable).
    #[arg(long = "serve-arg", value_name = "ARG", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
pub(crate) struct ComposeArgs {
    /// The SMTP or LMTP server to load.
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "routes")]
    target: Option<SocketAddr>,
    /// Deliver straight to each recipient domain's MX host as this transport
    /// map says (`domain smtp:[address]:port` lines, as `volley bench
    /// internet --routes-out` writes them), instead of to --target: the
    /// connections are spread evenly over the hosts. Needs --messages.
    #[arg(long, value_name = "FILE", conflicts_with = "target")]
    routes: Option<PathBuf>,
    /// Take the load's defaults and the domain weights from this scenario.
    #[arg(long)]
    scenario: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
    /// Give up on what is left after this long.
    #[arg(long, default_value = "600s", value_parser = volley_units::parse_duration)]
    timeout: Duration,
    /// Write every accepted message's id, recipient and digest (JSON lines),
    /// for `volley bench check`.
    #[arg(long)]
    sent_out: Option<PathBuf>,
    /// STARTTLS on every session, the server's certificate checked against
    /// the CA certificates in FILE (for the target's address).
    #[arg(long, value_name = "FILE")]
    starttls_ca: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct InternetArgs {
    /// Built-in scenario (uniform, realistic, hostile, provider-shared, provider-per-domain) or a TOML file.
    scenario: String,
    #[command(flatten)]
    sinks: SinkArgs,
    /// Stop after this long (default: run until killed).
    #[arg(long, value_parser = volley_units::parse_duration)]
    duration: Option<Duration>,
    /// Write the accepted messages (JSON lines) here every few seconds and at
    /// the end, for `volley bench check`.
    #[arg(long)]
    received_out: Option<PathBuf>,
    /// Write a Postfix-style transport map (domain smtp:[addr]:port) here,
    /// for MTAs that cannot use another DNS server.
    #[arg(long)]
    routes_out: Option<PathBuf>,
    /// Exit once the sinks have accepted this many messages, writing
    /// --received-out only then (not every few seconds, which would take CPU
    /// from the run being measured), and print the span from the first
    /// message sent (its send stamp) to the last accepted by a sink.
    #[arg(long, value_name = "N")]
    until_delivered: Option<usize>,
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Run(args) => bench_run(*args),
        BenchCommand::Compose(args) => bench_compose(*args),
        BenchCommand::Internet(args) => bench_internet(args),
        BenchCommand::Soak(args) => crate::soak_cmd::run(*args),
        BenchCommand::Compare { a, b } => {
            let a = Report::load(&a).with_context(|| format!("reading {}", a.display()))?;
            let b = Report::load(&b).with_context(|| format!("reading {}", b.display()))?;
            print!("{}", compare(&a, &b));
            Ok(())
        }
        BenchCommand::Check {
            scenario,
            sent,
            received,
        } => bench_check(&scenario, &sent, &received),
        BenchCommand::Certs { dir } => bench_certs(&dir),
        BenchCommand::Scenarios { name } => {
            match name {
                Some(n) => {
                    let s = Scenario::builtin(&n)
                        .with_context(|| format!("no built-in scenario {n}"))?;
                    print!("{}", s.to_toml());
                }
                None => {
                    for n in Scenario::builtin_names() {
                        let s = Scenario::builtin(n).context("built-in")?;
                        println!("{n:<20} {}", s.description);
                    }
                }
            }
            Ok(())
        }
    }
}

fn bench_run(args: RunArgs) -> anyhow::Result<()> {
    let name = args.scenario.as_deref().unwrap_or(DEFAULT_SCENARIO);
    let scenario = Scenario::load(name)?;
    let load = args.load.apply(scenario.load.clone())?;
    let mix = args.load.mix(Some(&scenario))?;
    let internet = args.sinks.start(&scenario)?;
    eprintln!(
        "simulated internet: scenario {} ({} domains), DNS {}, MX sinks on port {}",
        scenario.name,
        internet.domains().len(),
        internet.dns_addr(),
        internet.sink_port()
    );
    let (target, mut child, label) = match args.external {
        Some(addr) => (
            addr,
            None,
            args.label.clone().unwrap_or_else(|| addr.to_string()),
        ),
        None => {
            std::fs::create_dir_all(&args.out)
                .with_context(|| format!("creating {}", args.out.display()))?;
            let config = match &args.volley_config {
                Some(path) => path.clone(),
                None => {
                    let path = args.out.join("volley.toml");
                    std::fs::write(&path, BENCH_VOLLEY_CONFIG)?;
                    path
                }
            };
            let lmtp = load.protocol == Protocol::Lmtp;
            let addr = free_port()?;
            let log = std::fs::File::create(args.out.join("volley.log"))?;
            // Its own admin port, so that runs side by side do not collide.
            let mut extra = vec!["--admin-listen".to_string(), "127.0.0.1:0".to_string()];
            extra.extend(args.serve_args.iter().cloned());
            let child = start_volley(&internet, &config, addr, lmtp, log, &extra)?;
            eprintln!(
                "volley serve: ingest {addr}, config {}, log {}",
                config.display(),
                args.out.join("volley.log").display()
            );
            (
                addr,
                Some(child),
                args.label.clone().unwrap_or_else(|| "volley".into()),
            )
        }
    };
    let result = (|| {
        wait_for_listener(target, Duration::from_secs(20))?;
        let settings = RunSettings {
            load,
            mix,
            seed: args.load.seed.unwrap_or(scenario.seed),
            label,
            timeout: args.timeout,
            settle: Duration::from_millis(500),
            progress: !args.quiet,
        };
        let pid = child.as_ref().map(|c| c.id());
        let mut usage = || -> Option<EngineUsage> { pid.and_then(|p| process_usage(p).ok()) };
        anyhow::Ok(drive(&internet, target, &settings, &mut usage)?)
    })();
    if let Some(c) = child.as_mut() {
        stop_child(c);
    }
    let report = result?;
    write_report(&report, &args.out)?;
    print!("{}", report.summary());
    println!(
        "report: {} and {}",
        args.out.join("report.json").display(),
        args.out.join("report.html").display()
    );
    if !report.passed() {
        bail!("the run is not clean: see the accounting line");
    }
    Ok(())
}

fn write_report(report: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("report.json"), report.to_json())?;
    std::fs::write(dir.join("report.html"), report.html())?;
    Ok(())
}

/// Volley's configuration for bench runs: the defaults, except retries and
/// host back-off measured in seconds (and more attempts to match), so the
/// simulated internet's throttling and greylisting drain within a run rather
/// than in hours.
pub(crate) const BENCH_VOLLEY_CONFIG: &str = "\
# Written by `volley bench run`: Volley's defaults with short retries.
[general_queue]
retry_schedule = [\"1s\", \"2s\", \"5s\"]
host_down_for = \"1s\"
# Time is compressed, not patience: as many attempts as a day of real retries.
max_attempts = 100
";

/// A free port on 127.0.0.1 (for a child's listener).
pub(crate) fn free_port() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?)
}

/// Starts `volley serve` (this same executable) relaying into `internet`,
/// taking Composers at `listen`, its output going to `log`.
pub(crate) fn start_volley(
    internet: &SimulatedInternet,
    config: &Path,
    listen: SocketAddr,
    lmtp: bool,
    log: std::fs::File,
    extra: &[String],
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("finding the volley executable")?;
    Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .arg(if lmtp { "--lmtp-listen" } else { "--listen" })
        .arg(listen.to_string())
        .arg("--nameserver")
        .arg(internet.dns_addr().to_string())
        .arg("--delivery-port")
        .arg(internet.sink_port().to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting volley serve")
}

pub(crate) fn stop_child(child: &mut Child) {
    // SIGTERM first so it can finish cleanly, then SIGKILL.
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn bench_compose(args: ComposeArgs) -> anyhow::Result<()> {
    let scenario = args.scenario.as_deref().map(Scenario::load).transpose()?;
    let base = scenario
        .as_ref()
        .map(|s| s.load.clone())
        .unwrap_or_default();
    let load = args.load.apply(base)?;
    let mix = args.load.mix(scenario.as_ref())?;
    let routes = match &args.routes {
        Some(path) => parse_routes(
            &std::fs::read_to_string(path)
                .with_context(|| format!("reading routes {}", path.display()))?,
        )?,
        None => Vec::new(),
    };
    let target = match (args.target, routes.first()) {
        (Some(t), _) => t,
        (None, Some((_, a))) => *a,
        (None, None) => bail!("no --target, and the routes file is empty"),
    };
    let start = Instant::now();
    let handle = spawn_compose(ComposeConfig {
        target,
        routes,
        tls: args
            .starttls_ca
            .as_deref()
            .map(volley_bench::client_config_trusting)
            .transpose()?,
        load: load.clone(),
        mix,
        seed: args
            .load
            .seed
            .or(scenario.as_ref().map(|s| s.seed))
            .unwrap_or(1),
        run_id: format!("run{}", unix_micros()),
        timeout: args.timeout,
    })?;
    while !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(250));
        let p = handle.progress();
        use std::sync::atomic::Ordering::Relaxed;
        eprint!(
            "\r{:>6.1}s accepted {} of {} offered; 4xx {} 5xx {} session errors {}   ",
            start.elapsed().as_secs_f64(),
            p.accepted.load(Relaxed),
            p.offered.load(Relaxed),
            p.refused_transient.load(Relaxed),
            p.refused_permanent.load(Relaxed),
            p.session_errors.load(Relaxed)
        );
    }
    eprintln!();
    let outcome = handle.join()?;
    let s = &outcome.summary;
    println!(
        "compose -> {}: {} accepted of {} in {:.2} s = {:.0} msg/s ({:.1} MB/s); 4xx {} 5xx {} session errors {}; {} connections, pipelining {}, {}",
        s.target,
        s.accepted,
        s.offered,
        s.inject_secs,
        if s.inject_secs > 0.0 {
            s.accepted as f64 / s.inject_secs
        } else {
            0.0
        },
        if s.inject_secs > 0.0 {
            s.bytes as f64 / s.inject_secs / 1e6
        } else {
            0.0
        },
        s.refused_transient,
        s.refused_permanent,
        s.session_errors,
        s.connections,
        if s.pipelining { "on" } else { "off" },
        s.protocol
    );
    if let Some(path) = &args.sent_out {
        save_jsonl(path, &outcome.sent).with_context(|| format!("writing {}", path.display()))?;
        println!("sent records: {}", path.display());
    }
    Ok(())
}

fn bench_internet(args: InternetArgs) -> anyhow::Result<()> {
    let scenario = Scenario::load(&args.scenario)?;
    let internet = args.sinks.start(&scenario)?;
    println!("scenario     {} ({})", scenario.name, scenario.description);
    println!("dns          {} (UDP and TCP)", internet.dns_addr());
    println!("mx port      {} (every MX host)", internet.sink_port());
    for d in internet.domains().iter().take(12) {
        let hosts: Vec<String> = d.hosts.iter().map(|(h, a)| format!("{h}={a}")).collect();
        println!("  {:<16} {}", d.name, hosts.join(" "));
    }
    if internet.domains().len() > 12 {
        println!("  ... {} more domains", internet.domains().len() - 12);
    }
    if let Some(path) = &args.routes_out {
        std::fs::write(path, internet.routes())?;
        println!("routes       {}", path.display());
    }
    println!(
        "compose      volley bench compose --scenario {} --target HOST:PORT",
        args.scenario
    );
    let start = Instant::now();
    let mut last_write = Instant::now();
    let mut last_progress = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(if args.until_delivered.is_some() {
            10
        } else {
            1000
        }));
        if let Some(n) = args.until_delivered {
            if internet.delivered() >= n {
                eprintln!();
                return internet_done(&internet, args.received_out.as_deref());
            }
            if last_progress.elapsed() < Duration::from_secs(1) {
                continue;
            }
        }
        last_progress = Instant::now();
        let counters = internet.counters();
        let accepted: u64 = counters.iter().map(|c| c.total.accepted).sum();
        let throttled: u64 = counters.iter().map(|c| c.total.throttled()).sum();
        eprint!(
            "\r{:>6.0}s accepted {accepted} throttled {throttled} dns queries {}   ",
            start.elapsed().as_secs_f64(),
            internet.dns_queries()
        );
        let over = args.duration.is_some_and(|d| start.elapsed() >= d);
        if let Some(path) = &args.received_out
            && args.until_delivered.is_none()
            && (over || last_write.elapsed() >= Duration::from_secs(5))
        {
            save_jsonl(path, &internet.deliveries())?;
            last_write = Instant::now();
        }
        if over {
            eprintln!();
            return Ok(());
        }
    }
}

/// The sinks' own account of a run that reached its count: how many they
/// accepted, and the span from the first message's send stamp to the last
/// acceptance, both from the sinks' records.
fn internet_done(internet: &SimulatedInternet, received_out: Option<&Path>) -> anyhow::Result<()> {
    let deliveries = internet.deliveries();
    let first_sent = deliveries.iter().filter_map(|d| d.sent_micros).min();
    let last_accepted = deliveries.iter().map(|d| d.accepted_micros).max();
    let connections: u64 = internet
        .counters()
        .iter()
        .map(|c| c.total.connections)
        .sum();
    let peak: u64 = internet
        .counters()
        .iter()
        .map(|c| u64::from(c.peak_connections))
        .sum();
    if let (Some(a), Some(b)) = (first_sent, last_accepted) {
        let secs = b.saturating_sub(a) as f64 / 1e6;
        println!(
            "sinks: {} accepted, first sent -> last accepted {:.3} s = {:.0} msg/s; {} connections, sum of per-domain peaks {}",
            deliveries.len(),
            secs,
            if secs > 0.0 {
                deliveries.len() as f64 / secs
            } else {
                0.0
            },
            connections,
            peak
        );
    }
    if let Some(path) = received_out {
        save_jsonl(path, &deliveries).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn bench_certs(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca = volley_bench::TestCa::new("Volley bench CA")?;
    ca.write(&dir.join("ca.pem"))?;
    let leaf = ca.leaf(&["localhost", "127.0.0.1"], false)?;
    leaf.write(&dir.join("cert.pem"), &dir.join("key.pem"))?;
    println!("certs: {0}/ca.pem {0}/cert.pem {0}/key.pem", dir.display());
    Ok(())
}

fn bench_check(scenario: &str, sent: &Path, received: &Path) -> anyhow::Result<()> {
    let scenario = Scenario::load(scenario)?;
    let domains = scenario.domains()?;
    let sent: Vec<SentRecord> =
        load_jsonl(sent).with_context(|| format!("reading {}", sent.display()))?;
    let received: Vec<Delivery> =
        load_jsonl(received).with_context(|| format!("reading {}", received.display()))?;
    let acc = reconcile(&sent, &received, |rcpt| is_expected_bounce(&domains, rcpt));
    println!(
        "sent {} delivered {} expected-bounces {} lost {} duplicates {} unexpected {} corrupted {} uncertain {}",
        acc.sent,
        acc.delivered,
        acc.expected_bounces,
        acc.lost,
        acc.duplicates,
        acc.unexpected,
        acc.corrupted,
        acc.uncertain_undelivered
    );
    if !acc.lost_examples.is_empty() {
        println!("lost e.g. {}", acc.lost_examples.join(" "));
    }
    if !acc.duplicate_examples.is_empty() {
        println!("duplicated e.g. {}", acc.duplicate_examples.join(" "));
    }
    if !acc.is_clean() {
        bail!("not clean");
    }
    Ok(())
}
