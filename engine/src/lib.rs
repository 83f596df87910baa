//! Volley's engine (the engine issue fills this crate).

pub mod journal;
pub mod rate;
