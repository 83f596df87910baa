//! `volley check-config FILE`: validate a configuration file, explaining
//! each problem with its line; with `--diff RUNNING`, what a reload from
//! RUNNING to FILE changes.

use std::path::Path;

use volley_engine::Config;

pub(crate) fn run(path: &Path, running: Option<&Path>) -> anyhow::Result<()> {
    let running = match running {
        Some(r) => Some(load(r)?),
        None => None,
    };
    let new = load(path)?;
    if let Some(running) = running {
        let changes = volley_engine::config_changes(&running, &new, running.shard_count());
        if changes.is_empty() {
            println!("no changes: a reload changes nothing");
        }
        for c in changes {
            println!("{c}");
        }
    }
    Ok(())
}

/// Reads and checks one file, as `serve` would; prints its summary.
fn load(path: &Path) -> anyhow::Result<Config> {
    match Config::load(path) {
        Ok(c) => {
            // The certificate, key and CA files, read as `serve` reads them.
            if let Err(e) = volley_engine::check_tls_files(&c) {
                anyhow::bail!("{}: tls: {e}", path.display());
            }
            if let Err(e) = volley_engine::check_dkim_keys(&c) {
                anyhow::bail!("{}: {e}", path.display());
            }
            println!(
                "{}: ok ({} listener(s), {} shard(s), {} specific queue(s), delivery port {})",
                path.display(),
                c.listeners.len(),
                c.shard_count(),
                c.queues.len(),
                c.delivery_port
            );
            Ok(c)
        }
        Err(errors) => {
            for e in &errors {
                match e.line {
                    Some(line) => eprintln!("{}:{line}: {}", path.display(), e.message),
                    None => eprintln!("{}: {}", path.display(), e.message),
                }
            }
            anyhow::bail!("{}: {} problem(s)", path.display(), errors.len())
        }
    }
}
