//! The `volley` command line.

use clap::{Parser, Subcommand};

/// Volley: an outbound mass-mail accelerator.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay (not built yet: see the README).
    Serve,
    /// Load generator and simulated internet (not built yet: see the README).
    Bench,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve | Command::Bench => {
            anyhow::bail!("not yet: this part of Volley is not built; the README says what exists")
        }
    }
}
