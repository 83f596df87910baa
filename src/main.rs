//! The `volley` command line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod admin_client;
mod bench_cmd;
mod check_config;
mod dkim_keygen;
mod hash_password;
mod logging;
mod memory_return;
mod queue_cmd;
mod resolve;
mod sd_notify;
mod serve;
mod soak_cmd;
mod status;

/// Volley: an outbound mass-mail accelerator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay: accept mail from Composers, deliver it to the MX hosts.
    Serve(serve::ServeArgs),
    /// Ask a running Volley how it is doing (its admin API).
    Status(admin_client::AdminArgs),
    /// Stop accepting mail, deliver what is queued, then exit (a running
    /// Volley, through its admin API).
    Drain(admin_client::AdminArgs),
    /// The domain queues of a running Volley (its admin API).
    Queue {
        #[command(subcommand)]
        command: queue_cmd::QueueCommand,
        #[command(flatten)]
        admin: admin_client::AdminArgs,
    },
    /// Check a configuration file and explain each problem with its line;
    /// with `--diff RUNNING`, also say what a reload from RUNNING to it
    /// would change, and what of that needs a restart.
    CheckConfig {
        /// The configuration in force, to compare the file with.
        #[arg(long, value_name = "RUNNING")]
        diff: Option<std::path::PathBuf>,
        /// The TOML file.
        file: std::path::PathBuf,
    },
    /// Make a DKIM signing key: writes it (PKCS#8 PEM, mode 0600) and
    /// prints the DNS TXT record and the [[dkim]] entry for it.
    DkimKeygen {
        /// The signing domain (d=).
        #[arg(long)]
        domain: String,
        /// The selector (s=).
        #[arg(long)]
        selector: String,
        /// rsa-sha256 (2048 bits) or ed25519-sha256.
        #[arg(long, value_enum)]
        algorithm: dkim_keygen::Algorithm,
        /// Where to write the key; default SELECTOR.DOMAIN.pem.
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Print the argon2id hash of a password read from standard input,
    /// for a [[user]] entry's password_hash (SMTP AUTH).
    HashPassword,
    /// Load generator, simulated internet (DNS + MX sinks with hidden
    /// capacities), whole benchmark runs and their reports.
    Bench {
        #[command(subcommand)]
        command: bench_cmd::BenchCommand,
    },
    /// Show what Volley's resolver sees for each domain: MX hosts in the order
    /// they would be tried, their addresses and the TTL, or the outcome and why.
    Resolve {
        /// Mail domains (or domain literals such as [192.0.2.1]).
        #[arg(required = true)]
        domains: Vec<String>,
        /// Nameserver to ask, as ADDR:PORT (repeatable); default: /etc/resolv.conf.
        #[arg(long = "nameserver", value_name = "ADDR:PORT")]
        nameservers: Vec<SocketAddr>,
        /// Time to wait for each query, e.g. 2s or 500ms.
        #[arg(long, default_value = "5s", value_parser = volley_units::parse_duration)]
        timeout: Duration,
    },
}

/// Exit status of `volley resolve` when some domain has no route: an
/// answer, told apart from a failure to run (status 1).
const EXIT_NO_ROUTE: u8 = 2;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Status(args) => status::run(args),
        Command::Drain(args) => status::drain(args),
        Command::Queue { command, admin } => queue_cmd::run(command, admin),
        Command::CheckConfig { diff, file } => check_config::run(&file, diff.as_deref()),
        Command::HashPassword => hash_password::run(),
        Command::DkimKeygen {
            domain,
            selector,
            algorithm,
            out,
        } => dkim_keygen::run(&domain, &selector, algorithm, out),
        Command::Bench { command } => bench_cmd::run(command),
        Command::Resolve {
            domains,
            nameservers,
            timeout,
        } => match resolve::run(&domains, &nameservers, timeout) {
            Ok(0) => Ok(()),
            Ok(_) => return std::process::ExitCode::from(EXIT_NO_ROUTE),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            std::process::ExitCode::FAILURE
        }
    }
}

/// Prints an error and its causes, each once: wrapped errors often repeat
/// their source's text in their own, and a Debug print would add a
/// backtrace whenever RUST_BACKTRACE is set.
fn report(e: &anyhow::Error) {
    let mut seen: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if seen.iter().any(|s| s.contains(&text)) {
            continue;
        }
        seen.push(text);
    }
    eprintln!("volley: error: {}", seen.join(": "));
}
