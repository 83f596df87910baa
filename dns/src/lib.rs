//! MX resolution for Volley (the DNS issue fills this crate).
