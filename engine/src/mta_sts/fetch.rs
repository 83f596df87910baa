//! Fetching one domain's policy: the `_mta-sts` TXT record, then
//! `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` with the certificate
//! checked against the policy host's name (RFC 8461 3.3), over hyper's
//! HTTP/1.1 client on tokio-rustls. Runs on the MTA-STS thread, never on
//! a shard.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use volley_dns::Lookups;

use super::policy::{Policy, record_id};

/// The largest policy file read (RFC 8461 3.3 suggests 64 KiB).
const MAX_POLICY: usize = 64 * 1024;

/// What a fetch found.
#[derive(Debug)]
pub(super) enum Fetched {
    /// No `_mta-sts` record: the domain has no policy.
    NoRecord,
    /// The record's id and the policy it points at.
    Policy { id: String, policy: Policy },
}

/// Looks up and fetches `domain`'s policy within `timeout`; the error is
/// a sentence for the log.
pub(super) async fn fetch(
    lookups: &Lookups,
    tls: Arc<rustls::ClientConfig>,
    domain: &str,
    port: u16,
    timeout: Duration,
) -> Result<Fetched, String> {
    match tokio::time::timeout(timeout, fetch_inner(lookups, tls, domain, port)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

async fn fetch_inner(
    lookups: &Lookups,
    tls: Arc<rustls::ClientConfig>,
    domain: &str,
    port: u16,
) -> Result<Fetched, String> {
    let records = lookups
        .txt(&format!("_mta-sts.{domain}"))
        .await
        .map_err(|e| e.to_string())?;
    let Some(id) = record_id(&records) else {
        return Ok(Fetched::NoRecord);
    };
    let host = format!("mta-sts.{domain}");
    let text = get(lookups, tls, &host, port).await?;
    let policy = Policy::parse(&text).map_err(|e| format!("policy of {domain}: {e}"))?;
    Ok(Fetched::Policy { id, policy })
}

/// GET of the well-known path on `host`: the body of a 200 with a
/// text/plain type, no redirects followed (RFC 8461 3.3).
async fn get(
    lookups: &Lookups,
    tls: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
) -> Result<String, String> {
    let addrs = lookups.addrs(host).await.map_err(|e| e.to_string())?;
    let ip = addrs
        .first()
        .ok_or_else(|| format!("{host} has no address"))?;
    let tcp = tokio::net::TcpStream::connect(SocketAddr::new(*ip, port))
        .await
        .map_err(|e| format!("{host}:{port}: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host}: {e}"))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("{host}: TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/.well-known/mta-sts.txt")
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "Volley")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{host}: {e}"))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("{host}: HTTP {}", response.status()));
    }
    let plain = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("text/plain"));
    if !plain {
        return Err(format!("{host}: the policy is not text/plain"));
    }
    let body = Limited::new(response.into_body(), MAX_POLICY)
        .collect()
        .await
        .map_err(|e| format!("{host}: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| format!("{host}: the policy is not UTF-8"))
}
