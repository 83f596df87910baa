//! What the admin server asks the shards, over a channel per shard: each
//! shard answers on its own loop, from its own queues, so the admin
//! thread never touches a shard's state and a shard is never made to
//! wait for an admin client.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::queues::{FoundMessage, FoundRecipient, Listed, Listing};

/// How long the admin server waits for a shard's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// What an operator asks of a domain's queue.
#[derive(Debug, Clone)]
pub(crate) enum Steer {
    /// No connections for it for this long (open ones finish their
    /// transaction), and why.
    Suspend { duration: Duration, reason: String },
    /// End a suspension.
    Resume,
    /// Retry its deferred recipients now.
    Flush,
    /// Give up on what is queued for it (not what is in a transaction):
    /// each recipient bounces with this reason, logged and reported to
    /// its sender like any bounce.
    Bounce { reason: String },
}

/// A question for one shard.
pub(crate) enum Ask {
    /// The domain queues `listing` asks for, and how many matched.
    Queues {
        listing: Listing,
        reply: oneshot::Sender<Listed>,
    },
    /// The recipients of message `id` queued on the shard.
    Message {
        id: u64,
        reply: oneshot::Sender<Option<MessageView>>,
    },
    /// Apply a reloaded configuration (checked already) to the shard's
    /// queues, rules and resolver.
    Reconfigure(std::sync::Arc<crate::config::Config>),
    /// Accept on this socket (a listener a reload added).
    Listen {
        socket: std::net::TcpListener,
        config: crate::config::ListenerConfig,
    },
    /// Stop accepting on the listener configured at this address (a
    /// reload removed it); its sessions finish.
    Unlisten(std::net::SocketAddr),
    /// Steer `domain`'s queue; the answer counts what it touched (for a
    /// resume: 1 if a suspension held; for a flush: recipients moved).
    Steer {
        domain: String,
        steer: Steer,
        reply: oneshot::Sender<usize>,
    },
}

/// A message as one shard knows it: its envelope, and its recipients
/// queued there.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct MessageView {
    pub(crate) id: String,
    pub(crate) sender: String,
    pub(crate) message_id_header: Option<String>,
    /// Every recipient of the envelope, in order.
    pub(crate) envelope: Vec<String>,
    pub(crate) age_secs: f64,
    pub(crate) queued: Vec<FoundRecipient>,
}

/// The admin side's end of every shard's channel.
pub(crate) struct ShardLines {
    lines: Vec<mpsc::UnboundedSender<Ask>>,
}

/// One channel per shard: the lines for the admin side, and each shard's
/// end, to hand to [`answer`].
pub(crate) fn lines(shards: usize) -> (ShardLines, Vec<mpsc::UnboundedReceiver<Ask>>) {
    let (lines, ends) = (0..shards).map(|_| mpsc::unbounded_channel()).unzip();
    (ShardLines { lines }, ends)
}

impl ShardLines {
    /// Sends every shard a reloaded configuration; each applies it on its
    /// own loop, in order with the asks before and after it.
    pub(crate) fn reconfigure(&self, config: &std::sync::Arc<crate::config::Config>) {
        for line in &self.lines {
            let _ = line.send(Ask::Reconfigure(config.clone()));
        }
    }

    /// Hands each shard its socket of a new listener (one per shard, in
    /// shard order).
    pub(crate) fn listen(
        &self,
        sockets: Vec<std::net::TcpListener>,
        config: &crate::config::ListenerConfig,
    ) {
        for (line, socket) in self.lines.iter().zip(sockets) {
            let config = config.clone();
            let _ = line.send(Ask::Listen { socket, config });
        }
    }

    /// Asks every shard to stop accepting on the listener configured at
    /// `address`.
    pub(crate) fn unlisten(&self, address: std::net::SocketAddr) {
        for line in &self.lines {
            let _ = line.send(Ask::Unlisten(address));
        }
    }

    /// The domain queues `listing` asks for, of every shard: each sends its
    /// first `limit`, and they are merged in the listing's order; a shard
    /// that does not answer in time (stopping, say) is left out.
    pub(crate) async fn queues(&self, listing: &Listing) -> Listed {
        let mut waiting = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            let (reply, answer) = oneshot::channel();
            let ask = Ask::Queues {
                listing: listing.clone(),
                reply,
            };
            if line.send(ask).is_ok() {
                waiting.push(answer);
            }
        }
        let mut all = Listed::default();
        for answer in waiting {
            if let Ok(Ok(part)) = tokio::time::timeout(ANSWER_WITHIN, answer).await {
                all.views.extend(part.views);
                all.matched += part.matched;
            }
        }
        all.views.sort_by(|a, b| listing.order(a, b));
        all.views.truncate(listing.limit);
        all
    }

    /// Message `id` as the shards know it: its envelope, and every
    /// recipient of it queued on any shard; `None` when none is.
    pub(crate) async fn message(&self, id: u64) -> Option<MessageView> {
        let mut waiting = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            let (reply, answer) = oneshot::channel();
            if line.send(Ask::Message { id, reply }).is_ok() {
                waiting.push(answer);
            }
        }
        let mut view: Option<MessageView> = None;
        for answer in waiting {
            if let Ok(Ok(Some(part))) = tokio::time::timeout(ANSWER_WITHIN, answer).await {
                match &mut view {
                    Some(v) => v.queued.extend(part.queued),
                    None => view = Some(part),
                }
            }
        }
        if let Some(v) = &mut view {
            v.queued.sort_by_key(|r| r.index);
        }
        view
    }

    /// Steers `domain` on every shard (a suspension is kept by each, so it
    /// holds whichever shard the domain's recipients are on); the sum of
    /// the shards' answers, or `None` when one did not answer in time.
    pub(crate) async fn steer(&self, domain: &str, steer: Steer) -> Option<usize> {
        let mut waiting = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            let (reply, answer) = oneshot::channel();
            let ask = Ask::Steer {
                domain: domain.to_string(),
                steer: steer.clone(),
                reply,
            };
            line.send(ask).ok()?;
            waiting.push(answer);
        }
        let mut total = 0;
        for answer in waiting {
            total += tokio::time::timeout(ANSWER_WITHIN, answer)
                .await
                .ok()?
                .ok()?;
        }
        Some(total)
    }
}

/// What a shard does with the admin server's asks: it answers them from
/// its core.
pub(crate) trait Answerer {
    /// The domain queues `listing` asks for.
    fn views(&self, listing: &Listing, now: Instant) -> Listed;
    /// Applies `steer` to `domain`; what it touched.
    fn steer(&self, domain: &str, steer: Steer, now: Instant) -> usize;
    /// Message `id`'s recipients queued on this shard.
    fn message(&self, id: u64, now: Instant) -> Option<FoundMessage>;
    /// Applies a reloaded configuration.
    fn reconfigure(&self, config: &crate::config::Config);
    /// Accepts on `socket` as `config` says.
    fn listen(&self, socket: std::net::TcpListener, config: crate::config::ListenerConfig);
    /// Stops accepting on the listener configured at `address`.
    fn unlisten(&self, address: std::net::SocketAddr);
}

/// Answers one ask with `shard`.
pub(crate) fn answer(ask: Ask, shard: &impl Answerer) {
    let now = Instant::now();
    match ask {
        Ask::Queues { listing, reply } => {
            let _ = reply.send(shard.views(&listing, now));
        }
        Ask::Steer {
            domain,
            steer,
            reply,
        } => {
            let _ = reply.send(shard.steer(&domain, steer, now));
        }
        Ask::Reconfigure(config) => shard.reconfigure(&config),
        Ask::Listen { socket, config } => shard.listen(socket, config),
        Ask::Unlisten(address) => shard.unlisten(address),
        Ask::Message { id, reply } => {
            let view = shard.message(id, now).map(|found| {
                let msg = &found.msg;
                MessageView {
                    id: format!("{id:016x}"),
                    sender: msg.sender().to_string(),
                    message_id_header: msg.header_message_id().map(str::to_string),
                    envelope: (0..)
                        .map_while(|i| {
                            let r = msg.recipient(i);
                            (!r.is_empty()).then(|| r.to_string())
                        })
                        .collect(),
                    age_secs: now.saturating_duration_since(msg.received).as_secs_f64(),
                    queued: found.recipients,
                }
            });
            let _ = reply.send(view);
        }
    }
}
