//! An HTTPS server for MTA-STS policies, as `mta-sts.DOMAIN` serves them:
//! every GET gets the same policy file as text/plain. It counts requests,
//! so tests can see that a policy is cached.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct PolicyServer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl PolicyServer {
    /// Serves `policy` on `ip` (any free port) with `tls`.
    pub fn start(ip: Ipv4Addr, tls: Arc<rustls::ServerConfig>, policy: &str) -> PolicyServer {
        let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{policy}",
            policy.len()
        );
        let counter = requests.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                let serve = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let (acceptor, response, counter) =
                            (acceptor.clone(), response.clone(), counter.clone());
                        tokio::spawn(async move {
                            let Ok(mut s) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let mut request = Vec::new();
                            let mut buf = [0u8; 1024];
                            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                                match s.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => request.extend_from_slice(&buf[..n]),
                                }
                            }
                            assert!(request.starts_with(b"GET /.well-known/mta-sts.txt "));
                            counter.fetch_add(1, Ordering::SeqCst);
                            let _ = s.write_all(response.as_bytes()).await;
                            let _ = s.shutdown().await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stopped => {}
                }
            });
        });
        PolicyServer {
            addr,
            requests,
            _stop: stop,
        }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
