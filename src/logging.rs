//! How `volley serve` writes its log: every line on stderr, each with a
//! UTC timestamp (RFC 3339), its level and its source; colour only when
//! stderr is a terminal, so a file or a journal gets plain text; and one
//! JSON object per line with `--log-format json`, for log shippers.
//!
//! Volley's own lines (start-up, summaries, reloads, the final report) use
//! the target `volley`; the engine's use their module paths.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// The shape of each log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// `2026-12-02T22:58:00.123456Z  INFO volley: listening on ...`
    #[default]
    Text,
    /// `{"timestamp":"...","level":"INFO","target":"volley","message":"..."}`
    Json,
}

/// Installs the log for this process; `RUST_LOG` filters it (default:
/// info and above).
pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
