//! Reports and records on disk: JSON for reports, JSON lines for the sent
//! and received records (so `compose` and `internet` can run in separate
//! processes, even against another MTA, and be reconciled afterwards).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::report::Report;

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Writes one JSON value per line.
pub fn save_jsonl<T: Serialize>(path: &Path, items: &[T]) -> io::Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for item in items {
        serde_json::to_writer(&mut w, item).map_err(invalid)?;
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// Reads what [`save_jsonl`] wrote.
pub fn load_jsonl<T: DeserializeOwned>(path: &Path) -> io::Result<Vec<T>> {
    let mut out = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if !line.trim().is_empty() {
            out.push(serde_json::from_str(&line).map_err(invalid)?);
        }
    }
    Ok(out)
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports are plain data")
    }

    /// Reads a report written by [`to_json`](Self::to_json).
    pub fn load(path: &Path) -> io::Result<Report> {
        serde_json::from_reader(BufReader::new(File::open(path)?)).map_err(invalid)
    }
}
