//! `volley check-config FILE`: validate a configuration file, explaining
//! each problem with its line.

use std::path::Path;

use volley_engine::Config;

pub(crate) fn run(path: &Path) -> anyhow::Result<()> {
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
            Ok(())
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
