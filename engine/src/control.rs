//! What the admin server asks the shards, over a channel per shard: each
//! shard answers on its own loop, from its own queues, so the admin
//! thread never touches a shard's state and a shard is never made to
//! wait for an admin client.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::queues::DomainView;

/// How long the admin server waits for a shard's answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// A question for one shard.
pub(crate) enum Ask {
    /// Its domain queues whose names contain `filter` (all without one).
    Queues {
        filter: Option<String>,
        reply: oneshot::Sender<Vec<DomainView>>,
    },
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
    /// Every shard's domain queues matching `filter`; a shard that does not
    /// answer in time (stopping, say) is left out.
    pub(crate) async fn queues(&self, filter: Option<&str>) -> Vec<DomainView> {
        let mut waiting = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            let (reply, answer) = oneshot::channel();
            let ask = Ask::Queues {
                filter: filter.map(str::to_string),
                reply,
            };
            if line.send(ask).is_ok() {
                waiting.push(answer);
            }
        }
        let mut all = Vec::new();
        for answer in waiting {
            if let Ok(Ok(views)) = tokio::time::timeout(ANSWER_WITHIN, answer).await {
                all.extend(views);
            }
        }
        all
    }
}

/// What a shard answers: `views` gives its domain queues.
pub(crate) fn answer(ask: Ask, views: impl FnOnce(Option<&str>, Instant) -> Vec<DomainView>) {
    match ask {
        Ask::Queues { filter, reply } => {
            let _ = reply.send(views(filter.as_deref(), Instant::now()));
        }
    }
}
