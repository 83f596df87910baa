//! Volley's load generator and simulated internet (the bench issue fills this crate).
