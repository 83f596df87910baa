//! Human units for Volley's configuration files and command line.
//!
//! Every crate of the workspace reads durations and sizes through this one
//! crate, so a value that works in `volley.toml` works the same in the DNS
//! resolver settings, a bench scenario and a `--flag`. Durations use the
//! [`humantime`] syntax ("250ms", "30s", "5m", "1h 30m", "1.5s", "1d"), plus a
//! bare number of seconds that older configuration files use; sizes are a
//! number of bytes with an optional SI or IEC unit ("50MiB", "2GB", "1000").
//!
//! [`domain::routing_key`] is the one rule for a mail domain's key (case,
//! trailing dot, IDNA), shared the same way.
//!
//! The serde adapters in [`serde`] accept the text forms and plain numbers
//! (seconds, bytes), so TOML and JSON files can write either.

pub mod domain;
mod duration;
mod error;
pub mod serde;
mod size;

pub use crate::duration::{format_duration, parse_duration};
pub use crate::error::UnitError;
pub use crate::size::parse_size;
