//! Receiving sites: domains whose mail goes to the same MX hosts share one
//! pool of connections and one pace.
//!
//! Big providers host many domains on the same MX hosts and meter the
//! sending address, not the domain: forty small domains on one provider,
//! each learning its pace alone, would together open far more connections
//! than the provider allows. So once a domain's MX hosts are known (after
//! DNS, on its first connection), the domain joins the *site* those hosts
//! make, and from then on the site holds what was per domain: the rate
//! controller, the connection count and its limit, the idle connections
//! (a connection to the site carries recipients of any of its domains,
//! one domain's recipients per transaction), the pace's suspensions.
//!
//! # What makes a site
//!
//! The set of addresses the domain's MX hosts resolve to (within the
//! queue's `mx_limit`), not their names: Microsoft 365 gives each domain an
//! MX host name of its own (`contoso-com.mail.protection.outlook.com`) on
//! shared addresses, and domains that name the same hosts resolve to the
//! same addresses anyway. A provider whose hosts answer with rotating
//! subsets of addresses is grouped by an operator's suffix rule instead
//! (`site_suffixes = ["*.mail.protection.outlook.com"]`): MX hosts that all
//! end in one such suffix make the site that suffix names. The key also
//! carries the queue (its settings bound the site, and one connection must
//! serve every member under the same settings) and whether DNSSEC proved
//! the MX records (a connection checked by DANE for one domain is not
//! offered to a domain that does not ask for it, nor the reverse).
//!
//! A domain stays alone when its queue says `mx_rollup = false`, when its
//! queue has fixed MX hosts, and when an MTA-STS policy changes how its
//! connections are checked (their certificates are verified against that
//! domain's policy, which says nothing of the other domains of a site).
//!
//! # One shard per site
//!
//! Domains are spread over the shards by a hash of their names, so a
//! site's domains start on several shards. Sharing one budget between
//! shards would put a lock or a cross-shard message on every transaction;
//! instead the first shard to find a site claims it (the engine's site
//! owners), and a domain whose site another shard holds moves there once:
//! its waiting and retrying recipients are sent to that shard (the
//! retrying ones are tried again there at once), and the shard it left
//! forwards what still arrives for it. Those in a transaction finish
//! where they are. A site of one domain never moves, so a shard's share
//! of the domains is unchanged where no two domains share MX hosts.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Instant;

use super::{ConnId, DomainId};
use crate::cluster::Member;
use crate::rate::RateController;

/// Index of a pool in the shard's queue map (reused after removal).
pub(crate) type PoolId = usize;

/// What the domains of one pool share: their connections and their pace.
/// Every domain has a pool: its own (alone, before its MX hosts are known
/// or when kept alone), or its site's.
pub(crate) struct Pool {
    /// The site's key; `None` for a domain's own pool.
    pub(crate) site: Option<Rc<str>>,
    /// The domains it serves (one for a domain's own pool).
    pub(crate) members: Vec<DomainId>,
    /// Connections open or opening.
    pub(crate) conns: usize,
    /// Idle connections, oldest first.
    pub(crate) ready: VecDeque<ConnId>,
    /// The pace, when the queue is adaptive.
    pub(crate) rate: Option<RateController>,
    /// Its place in the cluster's budget, when `[cluster]` is on and the
    /// queue is adaptive (looked up with the pace, by the site's key or
    /// the lone domain's).
    pub(crate) member: Option<Member>,
    /// A resume is pending for this time (the pace suspended the pool).
    pub(crate) resume_at: Option<Instant>,
    /// While connections are open, no more open before this: one of them
    /// was just refused or failed.
    pub(crate) hold_until: Option<Instant>,
    /// Which member a connection looks at first for its next batch after
    /// its own domain, so that every member gets its turn.
    pub(crate) cursor: usize,
}

impl Pool {
    /// A domain's own pool, with what it learned before, if anything.
    pub(crate) fn alone(d: DomainId, rate: Option<RateController>) -> Pool {
        Pool {
            site: None,
            members: vec![d],
            conns: 0,
            ready: VecDeque::new(),
            rate,
            member: None,
            resume_at: None,
            hold_until: None,
            cursor: 0,
        }
    }
}

/// One MX host a domain's connection would try, as DNS gave it.
pub(crate) struct SiteHost<'a> {
    pub(crate) name: &'a str,
    pub(crate) addr: IpAddr,
}

/// The site key of a domain whose MX hosts (in the queue's order, within
/// its `mx_limit`) are `hosts`; `None` when there are none. `suffixes` are
/// the operator's rules (`*.example.net` or `example.net`).
pub(crate) fn site_key(
    queue: usize,
    mx_secure: bool,
    hosts: &[SiteHost<'_>],
    suffixes: &[String],
) -> Option<Rc<str>> {
    if hosts.is_empty() {
        return None;
    }
    let secure = if mx_secure { "dnssec" } else { "plain" };
    let by_rule = suffixes.iter().find(|rule| {
        let suffix = rule.trim_start_matches('*').trim_start_matches('.');
        !suffix.is_empty() && hosts.iter().all(|h| ends_with_label(h.name, suffix))
    });
    if let Some(rule) = by_rule {
        let suffix = rule.trim_start_matches('*').trim_start_matches('.');
        return Some(format!("{queue} {secure} *.{}", suffix.to_ascii_lowercase()).into());
    }
    let mut addrs: Vec<IpAddr> = hosts.iter().map(|h| h.addr).collect();
    addrs.sort();
    addrs.dedup();
    let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
    Some(format!("{queue} {secure} {}", list.join(",")).into())
}

/// Whether host `name` is `suffix` or ends in `.suffix` (a whole label),
/// ignoring case and a trailing dot.
fn ends_with_label(name: &str, suffix: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let suffix = suffix.trim_end_matches('.').to_ascii_lowercase();
    name == suffix
        || name
            .strip_suffix(&suffix)
            .is_some_and(|head| head.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts<'a>(list: &[(&'a str, &str)]) -> Vec<SiteHost<'a>> {
        list.iter()
            .map(|(name, addr)| SiteHost {
                name,
                addr: addr.parse().unwrap(),
            })
            .collect()
    }

    #[test]
    fn domains_on_the_same_addresses_share_a_site_whatever_their_hosts_are_called() {
        let a = hosts(&[("a-test.mail.p.example", "10.0.0.1"), ("x", "10.0.0.2")]);
        let b = hosts(&[("b-test.mail.p.example", "10.0.0.2"), ("y", "10.0.0.1")]);
        let c = hosts(&[("mx.c.example", "10.0.0.3")]);
        let key = |h: &[SiteHost<'_>]| site_key(0, false, h, &[]).unwrap();
        assert_eq!(key(&a), key(&b), "same addresses, in any order");
        assert_ne!(key(&a), key(&c));
        assert_eq!(site_key(0, false, &[], &[]), None);
    }

    #[test]
    fn the_queue_and_dnssec_keep_sites_apart() {
        let h = hosts(&[("mx.example", "10.0.0.1")]);
        let plain = site_key(0, false, &h, &[]);
        assert_ne!(plain, site_key(1, false, &h, &[]), "another queue");
        assert_ne!(plain, site_key(0, true, &h, &[]), "MX records proved");
    }

    #[test]
    fn an_operators_suffix_rule_groups_hosts_on_any_addresses() {
        let rules = vec!["*.mail.protection.outlook.com".to_string()];
        let a = hosts(&[("contoso-com.mail.protection.outlook.com", "10.1.0.1")]);
        let b = hosts(&[("fabrikam-com.MAIL.protection.outlook.com.", "10.2.0.9")]);
        let other = hosts(&[("evilmail.protection.outlook.com", "10.1.0.1")]);
        let key = |h: &[SiteHost<'_>]| site_key(0, false, h, &rules).unwrap();
        assert_eq!(key(&a), key(&b));
        assert_eq!(&*key(&a), "0 plain *.mail.protection.outlook.com");
        assert_ne!(key(&other), key(&a), "a suffix matches whole labels only");
        let mixed = hosts(&[
            ("contoso-com.mail.protection.outlook.com", "10.1.0.1"),
            ("backup.example", "10.3.0.1"),
        ]);
        assert_eq!(
            &*key(&mixed),
            "0 plain 10.1.0.1,10.3.0.1",
            "a rule names a site only when every host is under it"
        );
    }
}
