//! Operator rules: a reply pattern that suspends a destination or caps it.
//!
//! KumoMTA answers this need with a separate daemon reading the delivery log;
//! here the shard that read the reply applies the rule at once.
//!
//! ```toml
//! [[rules]]
//! pattern = '^421 4\.7\.0 \[TS0[13]\]'
//! suspend = "1h"
//!
//! [[rules]]
//! pattern = '(?i)too many connections'
//! max_connections = 2
//! duration = "30m"
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};
use volley_smtp::EnhancedCode;

/// How long a limit set by a rule lasts when the rule does not say.
const DEFAULT_LIMIT_DURATION: Duration = Duration::from_secs(3600);

fn default_limit_duration() -> Duration {
    DEFAULT_LIMIT_DURATION
}

/// One rule as written in the configuration.
///
/// The pattern is a regular expression (the `regex` crate's syntax, linear
/// time on any input) matched against `CODE ENHANCED TEXT`, e.g.
/// `451 4.7.1 Rate limit exceeded` (or `CODE TEXT` when the reply has no
/// enhanced code; multi-line texts are joined with spaces). Set either
/// `suspend`, or one or both of `max_connections` and `max_rate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The regular expression.
    pub pattern: String,
    /// Stop sending to the destination for this long.
    #[serde(default, with = "volley_units::serde::option_duration")]
    pub suspend: Option<Duration>,
    /// Allow at most this many connections for `duration`.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Allow at most this many messages per second for `duration`.
    #[serde(default)]
    pub max_rate: Option<f64>,
    /// How long a `max_connections` / `max_rate` limit lasts (default 1h).
    #[serde(
        default = "default_limit_duration",
        with = "volley_units::serde::duration"
    )]
    pub duration: Duration,
}

/// What a matching rule asks the controller to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Send nothing to the destination for this long.
    Suspend(Duration),
    /// Cap the connections and / or the rate for `duration`; the controller
    /// keeps learning below the cap.
    Limit {
        /// Most connections, if capped.
        connections: Option<u32>,
        /// Most messages per second, if capped.
        rate: Option<f64>,
        /// How long the cap lasts.
        duration: Duration,
    },
}

/// A rule that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    /// The pattern is not a valid regular expression.
    #[error("rate rule {index}: bad pattern {pattern:?}: {source}")]
    BadPattern {
        /// Position of the rule in the list, from 0.
        index: usize,
        /// The pattern as written.
        pattern: String,
        /// What the regex compiler said.
        #[source]
        source: regex::Error,
    },
    /// The rule says neither `suspend` nor a limit.
    #[error(
        "rate rule {index} ({pattern:?}) has no action: set suspend, max_connections or max_rate"
    )]
    NoAction {
        /// Position of the rule in the list, from 0.
        index: usize,
        /// The pattern as written.
        pattern: String,
    },
    /// The rule says both `suspend` and a limit.
    #[error("rate rule {index} ({pattern:?}) sets both suspend and a limit; pick one")]
    Conflicting {
        /// Position of the rule in the list, from 0.
        index: usize,
        /// The pattern as written.
        pattern: String,
    },
    /// A limit is zero, negative or not a number.
    #[error("rate rule {index} ({pattern:?}): limits must be positive")]
    BadLimit {
        /// Position of the rule in the list, from 0.
        index: usize,
        /// The pattern as written.
        pattern: String,
    },
}

/// Compiled operator rules; the first rule that matches wins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "Vec<RuleConfig>")]
pub struct RuleSet {
    rules: Vec<(Regex, Action)>,
}

impl TryFrom<Vec<RuleConfig>> for RuleSet {
    type Error = RuleError;

    fn try_from(configs: Vec<RuleConfig>) -> Result<Self, RuleError> {
        Self::new(&configs)
    }
}

impl RuleSet {
    /// Compiles the rules, reporting the first bad one by position.
    pub fn new(configs: &[RuleConfig]) -> Result<Self, RuleError> {
        let mut rules = Vec::with_capacity(configs.len());
        for (index, c) in configs.iter().enumerate() {
            let pattern = || c.pattern.clone();
            let re = Regex::new(&c.pattern).map_err(|source| RuleError::BadPattern {
                index,
                pattern: pattern(),
                source,
            })?;
            let has_limit = c.max_connections.is_some() || c.max_rate.is_some();
            let action = match (c.suspend, has_limit) {
                (Some(_), true) => {
                    return Err(RuleError::Conflicting {
                        index,
                        pattern: pattern(),
                    });
                }
                (Some(d), false) => Action::Suspend(d),
                (None, true) => {
                    let bad_rate = c.max_rate.is_some_and(|r| !(r.is_finite() && r > 0.0));
                    if c.max_connections == Some(0) || bad_rate {
                        return Err(RuleError::BadLimit {
                            index,
                            pattern: pattern(),
                        });
                    }
                    Action::Limit {
                        connections: c.max_connections,
                        rate: c.max_rate,
                        duration: c.duration,
                    }
                }
                (None, false) => {
                    return Err(RuleError::NoAction {
                        index,
                        pattern: pattern(),
                    });
                }
            };
            rules.push((re, action));
        }
        Ok(Self { rules })
    }

    /// True when there are no rules (the engine can skip matching).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The action of the first rule matching this reply, if any.
    ///
    /// Only 4yz and 5yz replies are matched: successes return `None` at once
    /// and cost nothing, so the engine may call this for every reply.
    pub fn match_reply(
        &self,
        code: u16,
        enhanced: Option<EnhancedCode>,
        text: &str,
    ) -> Option<Action> {
        if code < 400 || self.rules.is_empty() {
            return None;
        }
        let mut line = String::with_capacity(text.len() + 16);
        // Writing into a String cannot fail.
        let _ = match enhanced {
            Some(e) => write!(line, "{code} {e} {text}"),
            None => write!(line, "{code} {text}"),
        };
        self.rules
            .iter()
            .find(|(re, _)| re.is_match(&line))
            .map(|&(_, action)| action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Conf {
        rules: RuleSet,
    }

    fn parse(toml_text: &str) -> Result<RuleSet, toml::de::Error> {
        toml::from_str::<Conf>(toml_text).map(|c| c.rules)
    }

    #[test]
    fn first_matching_rule_wins_on_code_enhanced_and_text() {
        let rules = parse(
            r#"
            [[rules]]
            pattern = '^421 4\.7\.0 \[TS0[13]\]'
            suspend = "1h"

            [[rules]]
            pattern = '(?i)too many connections'
            max_connections = 2
            duration = "30m"

            [[rules]]
            pattern = '^4\d\d .*(?i)rate'
            max_rate = 1.5
            "#,
        )
        .unwrap();
        let e = |s, d| Some(EnhancedCode::new(4, s, d));
        assert_eq!(
            rules.match_reply(421, e(7, 0), "[TS01] Messages temporarily deferred"),
            Some(Action::Suspend(Duration::from_secs(3600)))
        );
        assert_eq!(
            rules.match_reply(421, e(7, 0), "Too many connections from 192.0.2.1"),
            Some(Action::Limit {
                connections: Some(2),
                rate: None,
                duration: Duration::from_secs(1800)
            })
        );
        assert_eq!(
            rules.match_reply(451, None, "Rate limited"),
            Some(Action::Limit {
                connections: None,
                rate: Some(1.5),
                duration: DEFAULT_LIMIT_DURATION
            })
        );
        // [TS02] is not in the first rule's class; no other rule matches it.
        assert_eq!(rules.match_reply(421, e(7, 0), "[TS02] deferred"), None);
        // Successes are never matched, even if the text would be.
        assert_eq!(rules.match_reply(250, None, "rate 1/s OK"), None);
    }

    #[test]
    fn bad_rules_are_reported_by_position() {
        let err = RuleSet::new(&[
            RuleConfig {
                pattern: "ok".into(),
                suspend: Some(Duration::from_secs(1)),
                max_connections: None,
                max_rate: None,
                duration: DEFAULT_LIMIT_DURATION,
            },
            RuleConfig {
                pattern: "(unclosed".into(),
                suspend: Some(Duration::from_secs(1)),
                max_connections: None,
                max_rate: None,
                duration: DEFAULT_LIMIT_DURATION,
            },
        ])
        .unwrap_err();
        assert!(
            matches!(err, RuleError::BadPattern { index: 1, .. }),
            "{err}"
        );

        let msg = parse("[[rules]]\npattern = 'x'\n").unwrap_err().to_string();
        assert!(msg.contains("has no action"), "{msg}");
        let msg = parse("[[rules]]\npattern = 'x'\nsuspend = '1m'\nmax_rate = 2.0\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("pick one"), "{msg}");
        let msg = parse("[[rules]]\npattern = 'x'\nmax_connections = 0\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("must be positive"), "{msg}");
        assert!(parse("[[rules]]\npattern = 'x'\nsuspend = 'soon'\n").is_err());
    }
}
