//! The serde adapters the configuration structs name as `units::duration` etc.;
//! the one parser behind them lives in `volley-units`, shared with dns and bench.

pub(crate) use volley_units::serde::{duration, durations, size};
