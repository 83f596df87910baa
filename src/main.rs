//! The `volley` command line.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod bench_cmd;
mod check_config;
mod hash_password;
mod logging;
mod resolve;
mod serve;

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
    /// Check a configuration file and explain each problem with its line.
    CheckConfig {
        /// The TOML file.
        file: std::path::PathBuf,
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
        Command::CheckConfig { file } => check_config::run(&file),
        Command::HashPassword => hash_password::run(),
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
