//! The event feed: each recipient outcome (delivered, deferred, bounced,
//! expired), as the delivery log writes it, POSTed to the Composer's own
//! HTTP endpoint in JSON batches, so its systems see each outcome as it
//! happens.
//!
//! Shards hand events to a bounded queue and never wait: when the queue
//! is full (the endpoint is down longer than the queue lasts), events are
//! dropped, counted and logged. One thread of its own (an ordinary tokio
//! runtime, never a shard's) sends the batches in order, one at a time,
//! and sends a batch again until the endpoint answers 2xx, backing off
//! from 1 s to a minute: at least once, in order per recipient, while
//! Volley runs (events still unsent when it stops are counted in the log,
//! not kept).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::config::{Endpoint, EventsSettings};
use crate::tls::TlsContext;

/// The first pause after a failed POST; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where shards hand their events; cheap to share.
pub(crate) struct EventFeed {
    tx: SyncSender<String>,
    dropped: Arc<AtomicU64>,
    /// Set when the engine lets go of the feed: a batch that cannot be
    /// sent then is given up instead of retried for ever.
    closed: Arc<AtomicBool>,
}

impl Drop for EventFeed {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

impl EventFeed {
    /// Starts the sending thread (check-config has checked `url`).
    pub(crate) fn start(
        settings: &EventsSettings,
        url: &str,
        tls: &TlsContext,
    ) -> std::io::Result<EventFeed> {
        let endpoint = Endpoint::parse(url).map_err(std::io::Error::other)?;
        let tls = match endpoint.https {
            true => Some(
                tls.verifying(settings.ca_file.as_deref())
                    .map_err(std::io::Error::other)?,
            ),
            false => None,
        };
        let (tx, rx) = sync_channel(settings.queue.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let closed = Arc::new(AtomicBool::new(false));
        let sender = Sender {
            endpoint,
            tls,
            batch: settings.batch.max(1),
            timeout: settings.timeout,
            dropped: dropped.clone(),
            closed: closed.clone(),
        };
        std::thread::Builder::new()
            .name("volley-events".into())
            .spawn(move || sender.run(rx))?;
        Ok(EventFeed {
            tx,
            dropped,
            closed,
        })
    }

    /// Queues one event (a JSON object); never waits.
    pub(crate) fn offer(&self, event: String) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        target: "volley",
                        "event feed: queue full, events dropped (the endpoint is down or slow)"
                    );
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Events dropped so far because the queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct Sender {
    endpoint: Endpoint,
    /// For an https endpoint: the roots its certificate is checked against.
    tls: Option<Arc<rustls::ClientConfig>>,
    batch: usize,
    timeout: Duration,
    dropped: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
}

impl Sender {
    fn run(self, rx: Receiver<String>) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            tracing::error!(target: "volley", "event feed: no runtime; events are not sent");
            return;
        };
        let mut reported_drops = 0;
        // Ends when every shard's handle is gone and the queue is empty.
        while let Ok(first) = rx.recv() {
            let mut events = vec![first];
            while events.len() < self.batch {
                match rx.try_recv() {
                    Ok(e) => events.push(e),
                    Err(_) => break,
                }
            }
            let body = Bytes::from(format!("[{}]", events.join(",")));
            let mut backoff = FIRST_BACKOFF;
            let mut failures = 0u32;
            loop {
                match rt.block_on(self.post(body.clone())) {
                    Ok(()) => break,
                    Err(why) if self.closed.load(Ordering::Relaxed) => {
                        let left = events.len() + rx.try_iter().count();
                        tracing::warn!(
                            target: "volley",
                            "event feed: {left} events not sent ({why}): Volley is stopping"
                        );
                        return;
                    }
                    Err(why) => {
                        failures += 1;
                        if failures == 1 {
                            tracing::warn!(
                                target: "volley",
                                "event feed: POST to {}:{} failed ({why}); retrying with back-off",
                                self.endpoint.host,
                                self.endpoint.port
                            );
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            if failures > 0 {
                tracing::info!(target: "volley", "event feed: delivered again after {failures} failed tries");
            }
            let dropped = self.dropped.load(Ordering::Relaxed);
            if dropped > reported_drops {
                tracing::warn!(target: "volley", "event feed: {} events dropped so far", dropped);
                reported_drops = dropped;
            }
        }
    }

    /// One POST of a JSON array; Ok on a 2xx answer.
    async fn post(&self, body: Bytes) -> Result<(), String> {
        let deadline = Instant::now() + self.timeout;
        let work = async {
            let e = &self.endpoint;
            let tcp = tokio::net::TcpStream::connect((e.host.as_str(), e.port))
                .await
                .map_err(|err| err.to_string())?;
            let mut sender = match &self.tls {
                None => handshake(tcp).await?,
                Some(tls) => {
                    let name = rustls::pki_types::ServerName::try_from(e.host.clone())
                        .map_err(|err| err.to_string())?;
                    let stream = tokio_rustls::TlsConnector::from(tls.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|err| format!("TLS: {err}"))?;
                    handshake(stream).await?
                }
            };
            let request = hyper::Request::post(e.path.as_str())
                .header(hyper::header::HOST, format!("{}:{}", e.host, e.port))
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header(hyper::header::USER_AGENT, "Volley")
                .body(Full::new(body))
                .map_err(|err| err.to_string())?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|err| err.to_string())?;
            let status = response.status();
            // Read the answer to the end, so the connection closes cleanly.
            let _ = response.into_body().collect().await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {status}"))
            }
        };
        match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}

/// HTTP/1.1 over `io`, its connection driven by a task of its own.
async fn handshake<T>(io: T) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|err| err.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}
