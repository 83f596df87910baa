//! `volley resolve`: what Volley's resolver sees for some domains.

use std::net::SocketAddr;
use std::time::Duration;

use volley_dns::{MxResolver, ResolverConfig};

/// Resolves `domains` concurrently and prints, in the order given, each
/// route (MX hosts in the order Volley would try them, addresses, TTL) or the
/// outcome and why. A domain without a route is an answer, not an error:
/// returns how many domains had none (the caller exits with status 2).
pub(crate) fn run(
    domains: &[String],
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> anyhow::Result<usize> {
    let config = ResolverConfig {
        nameservers: nameservers.to_vec(),
        timeout,
        ..ResolverConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let failures = tokio::task::LocalSet::new().block_on(&runtime, async move {
        let resolver = MxResolver::new(config)?;
        let tasks: Vec<_> = domains
            .iter()
            .map(|d| {
                let (r, d) = (resolver.clone(), d.clone());
                tokio::task::spawn_local(async move { r.resolve(&d).await })
            })
            .collect();
        let mut failures = 0;
        for (domain, task) in domains.iter().zip(tasks) {
            match task.await? {
                Ok(route) => print!("{route}"),
                Err(e) => {
                    failures += 1;
                    let kind = if e.is_permanent() {
                        "permanent"
                    } else {
                        "transient"
                    };
                    println!("{domain}: {kind} failure ({}): {e}", e.enhanced_status());
                }
            }
        }
        anyhow::Ok(failures)
    })?;
    if failures > 0 {
        eprintln!(
            "volley: {failures} of {} domains have no route",
            domains.len()
        );
    }
    Ok(failures)
}
