//! Which shard owns a domain, and the hand-off of recipients to their
//! owners: one message's recipients are grouped by owner shard and each
//! group travels with the message by reference (`Arc`), so the body is
//! never copied between shards.
//!
//! A domain's owner is a hash of its name, until its MX hosts make it a
//! member of a receiving site that another shard claimed first: then its
//! recipients move there (see [`SiteOwners`]), and the shard it left
//! forwards what still arrives for it.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::message::{Message, Node};

/// What a shard's inbox carries.
pub(crate) enum Inbound {
    /// Recipients of a message, from the shard that accepted it.
    Handoff(Handoff),
    /// Queued recipients of one domain, from the shard it left for this
    /// one (its site is here), with their attempts.
    Moved(Moved),
}

/// Recipients of one domain moving to the shard that holds its site.
pub(crate) struct Moved {
    /// The domain's routing key.
    pub(crate) key: Box<str>,
    pub(crate) nodes: Vec<Node>,
}

/// Which shard holds each receiving site: the first that claimed it.
///
/// A site's domains are spread over the shards by their names; one shard
/// must hold them all, or each shard's part would learn the receiver's
/// limit alone and together overrun it. The first shard to find a site's
/// MX hosts claims it, so a site of one domain never moves, and a
/// domain whose site another shard holds moves there once. The map is
/// read when a delivery connection has resolved its MX hosts (not per
/// message), and keyed by a hash of the site's key: a collision only
/// puts two sites on one shard. It holds an entry per site seen in this
/// run (about 16 bytes each).
#[derive(Default)]
pub(crate) struct SiteOwners(Mutex<HashMap<u64, usize>>);

impl SiteOwners {
    /// The shard that holds site `key`: `shard` when no shard has claimed
    /// it yet (it now has).
    pub(crate) fn claim(&self, key: &str, shard: usize) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        *self.0.lock().entry(h.finish()).or_insert(shard)
    }
}

/// Recipients of one message handed to their owner shard.
pub(crate) struct Handoff {
    pub(crate) msg: Arc<Message>,
    /// (recipient index, routing key of its domain).
    pub(crate) rcpts: Vec<(u32, Box<str>)>,
}

/// Every shard's inbox, and the rule that picks a domain's owner.
pub(crate) struct Router {
    inboxes: Vec<mpsc::UnboundedSender<Inbound>>,
}

impl Router {
    pub(crate) fn new(inboxes: Vec<mpsc::UnboundedSender<Inbound>>) -> Router {
        Router { inboxes }
    }

    /// Sends a domain's recipients to `shard`, where its site is; gives
    /// them back when that shard is gone (stopping).
    pub(crate) fn move_to(&self, shard: usize, moved: Moved) -> Result<(), Moved> {
        match self.inboxes[shard].send(Inbound::Moved(moved)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendError(Inbound::Moved(m))) => Err(m),
            Err(_) => unreachable!("what was sent comes back"),
        }
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
            } else if let Err(mpsc::error::SendError(Inbound::Handoff(h))) =
                self.inboxes[shard].send(Inbound::Handoff(handoff))
            {
                kept.push(h);
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

    #[test]
    fn the_first_shard_to_claim_a_site_holds_it() {
        let owners = SiteOwners::default();
        assert_eq!(owners.claim("0 plain 10.0.0.1", 1), 1);
        assert_eq!(owners.claim("0 plain 10.0.0.1", 0), 1, "already claimed");
        assert_eq!(owners.claim("0 plain 10.0.0.2", 0), 0);
    }
}
