//! The two texts of MTA-STS (RFC 8461): the `_mta-sts` TXT record, whose
//! `id` says when the policy changed, and the policy file, which says how
//! strict to be and which MX host names are right. Pure parsing and
//! matching: nothing here does I/O.

use std::time::Duration;

/// The longest `max_age` RFC 8461 3.2 allows: a year.
const MAX_AGE_LIMIT: u64 = 31_557_600;

/// What a policy asks of senders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Deliver only to MX hosts the policy names, over TLS with a valid
    /// certificate for the host's name.
    Enforce,
    /// Report failures (Volley logs them) but deliver as usual.
    Testing,
    /// No policy.
    None,
}

/// A receiving domain's MTA-STS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) mode: Mode,
    /// Host names and `*.` patterns of the MX hosts, lower case.
    mx: Vec<String>,
    /// How long the policy may be cached.
    pub(crate) max_age: Duration,
}

impl Policy {
    /// Parses a policy file (RFC 8461 3.2): `key: value` lines, CRLF or LF.
    pub(crate) fn parse(text: &str) -> Result<Policy, String> {
        let mut version = None;
        let mut mode = None;
        let mut max_age = None;
        let mut mx = Vec::new();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(format!("not a key: value line: {line:?}"));
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_string()),
                "mode" => {
                    mode = Some(match value {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        other => return Err(format!("unknown mode {other:?}")),
                    })
                }
                "max_age" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| format!("max_age {value:?} is not a number of seconds"))?;
                    max_age = Some(Duration::from_secs(secs.min(MAX_AGE_LIMIT)));
                }
                "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
                // Unknown keys are for later versions (RFC 8461 3.2).
                _ => {}
            }
        }
        if version.as_deref() != Some("STSv1") {
            return Err("version is not STSv1".into());
        }
        let mode = mode.ok_or("no mode")?;
        let max_age = max_age.ok_or("no max_age")?;
        if mx.is_empty() && mode != Mode::None {
            return Err("no mx".into());
        }
        Ok(Policy { mode, mx, max_age })
    }

    /// Whether the policy names the MX host `host` (RFC 8461 4.1): the
    /// same name, or `*.` and one more label on the left.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(parent) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
                None => *pattern == host,
            })
    }

    /// The patterns, for the log.
    pub(crate) fn mx(&self) -> &[String] {
        &self.mx
    }
}

/// The `id` of a domain's `_mta-sts` TXT record (RFC 8461 3.1): `None`
/// when there is no record starting `v=STSv1`, or more than one (which
/// the RFC says to treat as none).
pub(crate) fn record_id(records: &[String]) -> Option<String> {
    let mut sts = records.iter().filter(|r| r.starts_with("v=STSv1"));
    let record = sts.next()?;
    if sts.next().is_some() {
        return None;
    }
    record.split(';').find_map(|field| {
        let (k, v) = field.split_once('=')?;
        (k.trim() == "id")
            .then(|| v.trim().to_string())
            .filter(|id| {
                !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric())
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOGLE: &str = "version: STSv1\r\nmode: enforce\r\nmx: gmail-smtp-in.l.google.com\r\nmx: *.gmail-smtp-in.l.google.com\r\nmax_age: 86400\r\n";

    #[test]
    fn a_real_policy_parses_and_matches_its_hosts() {
        let p = Policy::parse(GOOGLE).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, Duration::from_secs(86400));
        assert!(p.allows("gmail-smtp-in.l.google.com"));
        assert!(p.allows("Alt1.Gmail-smtp-in.l.google.com."));
        assert!(
            !p.allows("a.b.gmail-smtp-in.l.google.com"),
            "one label only"
        );
        assert!(!p.allows("evil.example"));
        assert!(!p.allows("l.google.com"));
    }

    #[test]
    fn bad_policies_are_refused_with_a_reason() {
        assert!(Policy::parse("mode: enforce\nmx: a\nmax_age: 1\n").is_err());
        assert!(Policy::parse("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n").is_err());
        assert!(Policy::parse("version: STSv1\nmode: enforce\nmax_age: 1\n").is_err());
        assert!(Policy::parse("version: STSv1\nmode: enforce\nmx: a\n").is_err());
        let none = Policy::parse("version: STSv1\nmode: none\nmax_age: 86400\n").unwrap();
        assert_eq!(none.mode, Mode::None);
        let long = Policy::parse("version: STSv1\nmode: testing\nmx: a\nmax_age: 99999999\n");
        assert_eq!(long.unwrap().max_age, Duration::from_secs(MAX_AGE_LIMIT));
    }

    #[test]
    fn the_txt_record_gives_the_id_of_exactly_one_sts_record() {
        let r = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            record_id(&r(&["v=spf1 -all", "v=STSv1; id=20190429T010101;"])).as_deref(),
            Some("20190429T010101")
        );
        assert_eq!(record_id(&r(&["v=STSv1; id=not-alnum"])), None);
        assert_eq!(record_id(&r(&["v=STSv1; id=1", "v=STSv1; id=2"])), None);
        assert_eq!(record_id(&r(&["v=STSv1;"])), None);
        assert_eq!(record_id(&r(&[])), None);
    }
}
