//! Which shard owns a domain, and the hand-off of recipients to their
//! owners: one message's recipients are grouped by owner shard and each
//! group travels with the message by reference (`Arc`), so the body is
//! never copied between shards.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::message::Message;

/// Recipients of one message handed to their owner shard.
pub(crate) struct Handoff {
    pub(crate) msg: Arc<Message>,
    /// (recipient index, routing key of its domain).
    pub(crate) rcpts: Vec<(u32, Box<str>)>,
}

/// Every shard's inbox, and the rule that picks a domain's owner.
pub(crate) struct Router {
    inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
}

impl Router {
    pub(crate) fn new(inboxes: Vec<mpsc::UnboundedSender<Handoff>>) -> Router {
        Router { inboxes }
    }

    /// The shard that owns the domain with routing key `key`.
    fn owner(&self, key: &str) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.inboxes.len() as u64) as usize
    }

    /// A message's recipients (index, routing key) grouped by owner shard:
    /// entry `n` holds what shard `n` owns, in recipient order.
    pub(crate) fn split_by_owner(
        &self,
        keys: impl IntoIterator<Item = (u32, Box<str>)>,
    ) -> Vec<Vec<(u32, Box<str>)>> {
        let mut per_shard: Vec<Vec<(u32, Box<str>)>> = Vec::new();
        per_shard.resize_with(self.inboxes.len(), Vec::new);
        for (i, key) in keys {
            per_shard[self.owner(&key)].push((i, key));
        }
        per_shard
    }

    /// Hands the message's recipients to their owners. The group owned by
    /// `local` (the calling shard, if any) is returned instead of sent, as
    /// is a group whose owner is gone (shutting down): the caller keeps it.
    pub(crate) fn hand_off(
        &self,
        msg: &Arc<Message>,
        keys: impl IntoIterator<Item = (u32, Box<str>)>,
        local: Option<usize>,
    ) -> Vec<Handoff> {
        let mut kept = Vec::new();
        for (shard, rcpts) in self.split_by_owner(keys).into_iter().enumerate() {
            if rcpts.is_empty() {
                continue;
            }
            let handoff = Handoff {
                msg: msg.clone(),
                rcpts,
            };
            if Some(shard) == local {
                kept.push(handoff);
            } else if let Err(e) = self.inboxes[shard].send(handoff) {
                kept.push(e.0);
            }
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_always_has_the_same_owner_and_groups_keep_recipient_order() {
        let (txs, _rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| mpsc::unbounded_channel()).unzip();
        let router = Router::new(txs);
        let keys = ["a.example", "b.example", "a.example", "c.example"];
        let groups = router.split_by_owner(keys.iter().zip(0u32..).map(|(k, i)| (i, (*k).into())));
        assert_eq!(groups.len(), 4);
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 4);
        let a = router.owner("a.example");
        let idx: Vec<u32> = groups[a]
            .iter()
            .filter(|(_, k)| &**k == "a.example")
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(idx, vec![0, 2]);
        for g in &groups {
            assert!(g.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
}
