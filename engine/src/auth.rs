//! SMTP AUTH on ingest: the password check against the configured users'
//! hashes, and a guard against guessing. Both are free of I/O (the check
//! is CPU work the session runs off its shard's loop; the guard is told
//! the time).
//!
//! The guard counts failures per client address: the first few cost
//! nothing, the next ones are answered slower and slower, and past a
//! limit the address is refused AUTH for a while, as Postfix's anvil and
//! fail2ban setups do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use parking_lot::Mutex;

use crate::config::UserConfig;

/// Failures answered at once before replies slow down.
const FREE_FAILURES: u32 = 2;
/// Failures after which the address is refused AUTH.
const LOCKOUT_AFTER: u32 = 10;
/// How long a locked-out address is refused, and how long failures are
/// remembered.
pub(crate) const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// The longest a refusal is held back.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Addresses remembered at most; past it the oldest are forgotten.
const MAX_ADDRESSES: usize = 100_000;

/// A hash every unknown name is checked against, so that an unknown user
/// costs as much time as a wrong password and names cannot be probed.
const DECOY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$Q0XDMTHdwcjjTlhdtyzuMUyTbZxbzNWHdyi1qJtP2p8";

/// Whether `password` is `name`'s, by the users' hashes. Slow on purpose
/// (argon2): run it off the shard's event loop.
pub(crate) fn verify(users: &[UserConfig], authzid: &str, name: &str, password: &str) -> bool {
    // Acting as someone else is not supported.
    if !authzid.is_empty() && authzid != name {
        return false;
    }
    let user = users.iter().find(|u| u.name == name);
    let hash = user.map_or(DECOY, |u| u.password_hash.as_str());
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let ok = argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && user.is_some()
}

/// What the guard says about an AUTH attempt from an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// Check the password; hold a refusal back this long.
    Allowed { delay_refusal: Duration },
    /// Refuse without checking, until then.
    LockedOut,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
}

/// Failed AUTH attempts per client address, shared by every shard.
#[derive(Default)]
pub(crate) struct AuthGuard {
    by_ip: Mutex<HashMap<IpAddr, Record>>,
}

impl AuthGuard {
    /// Whether `ip` may try now.
    pub(crate) fn attempt(&self, ip: IpAddr, now: Instant) -> Attempt {
        let mut map = self.by_ip.lock();
        let Some(r) = map.get(&ip).copied() else {
            return Attempt::Allowed {
                delay_refusal: Duration::ZERO,
            };
        };
        if now.saturating_duration_since(r.last) >= LOCKOUT {
            map.remove(&ip);
            return Attempt::Allowed {
                delay_refusal: Duration::ZERO,
            };
        }
        if r.failures >= LOCKOUT_AFTER {
            return Attempt::LockedOut;
        }
        let slow = r.failures.saturating_sub(FREE_FAILURES - 1);
        Attempt::Allowed {
            delay_refusal: (Duration::from_secs(1) * slow).min(MAX_DELAY),
        }
    }

    /// `ip` gave wrong credentials; true when this locked it out.
    pub(crate) fn failed(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.by_ip.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            map.retain(|_, r| now.saturating_duration_since(r.last) < LOCKOUT);
            if map.len() >= MAX_ADDRESSES
                && let Some(oldest) = map.iter().min_by_key(|(_, r)| r.last).map(|(ip, _)| *ip)
            {
                map.remove(&oldest);
            }
        }
        let r = map.entry(ip).or_insert(Record {
            failures: 0,
            last: now,
        });
        r.failures += 1;
        r.last = now;
        r.failures == LOCKOUT_AFTER
    }

    /// `ip` authenticated: its failures are forgotten.
    pub(crate) fn succeeded(&self, ip: IpAddr) {
        self.by_ip.lock().remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, SaltString};

    fn user(name: &str, password: &str) -> UserConfig {
        let salt = SaltString::from_b64("c2FsdHNhbHRzYWx0").unwrap();
        let hash = argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string();
        UserConfig {
            name: name.into(),
            password_hash: hash,
        }
    }

    #[test]
    fn only_the_right_password_of_a_known_user_passes() {
        let users = [user("composer", "right")];
        assert!(verify(&users, "", "composer", "right"));
        assert!(verify(&users, "composer", "composer", "right"));
        assert!(!verify(&users, "", "composer", "wrong"));
        assert!(!verify(&users, "", "nobody", "right"));
        assert!(
            !verify(&users, "admin", "composer", "right"),
            "no acting as another"
        );
    }

    #[test]
    fn the_decoy_is_a_valid_hash() {
        assert!(PasswordHash::new(DECOY).is_ok());
    }

    #[test]
    fn failures_slow_down_then_lock_out_then_expire() {
        let g = AuthGuard::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        let delay = |d: u64| Attempt::Allowed {
            delay_refusal: Duration::from_secs(d),
        };
        assert_eq!(g.attempt(ip, t0), delay(0));
        let mut seen = Vec::new();
        for _ in 0..LOCKOUT_AFTER {
            assert!(!matches!(g.attempt(ip, t0), Attempt::LockedOut));
            seen.push(g.failed(ip, t0));
            if let Attempt::Allowed { delay_refusal } = g.attempt(ip, t0) {
                assert!(delay_refusal <= MAX_DELAY);
            }
        }
        assert_eq!(seen.iter().filter(|&&l| l).count(), 1, "locked out once");
        assert_eq!(g.attempt(ip, t0), Attempt::LockedOut);
        assert_eq!(g.attempt(other, t0), delay(0), "other addresses go on");
        assert_eq!(
            g.attempt(ip, t0 + LOCKOUT),
            delay(0),
            "forgotten after a while"
        );

        g.failed(ip, t0);
        g.failed(ip, t0);
        assert_eq!(g.attempt(ip, t0), delay(1));
        g.succeeded(ip);
        assert_eq!(g.attempt(ip, t0), delay(0));
    }
}
