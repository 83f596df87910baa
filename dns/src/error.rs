//! Outcomes of a failed resolution, split into permanent and transient.

/// Why no route to a domain's mail servers could be found.
///
/// Cloneable because one answer is shared by every waiter of a de-duplicated
/// lookup and kept in the negative cache.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    #[error("{domain} does not accept mail (null MX, RFC 7505)")]
    NullMx {
        /// The domain asked for.
        domain: String,
    },
    /// The domain does not exist (NXDOMAIN).
    #[error("{domain} does not exist (NXDOMAIN)")]
    NoSuchDomain {
        /// The domain asked for.
        domain: String,
    },
    /// Neither its MX hosts nor (without MX) the domain itself have an address.
    #[error("no address for {domain}: {detail}")]
    NoAddress {
        /// The domain asked for.
        domain: String,
        /// What was missing.
        detail: String,
    },
    /// The name is not a valid domain name.
    #[error("invalid domain name {domain:?}: {reason}")]
    InvalidDomain {
        /// The text given.
        domain: String,
        /// Why it was rejected.
        reason: String,
    },
    /// No answer within the configured timeout and attempts.
    #[error("DNS lookup for {domain} timed out: no answer from {nameservers}")]
    Timeout {
        /// The name asked for.
        domain: String,
        /// The nameservers asked, as `ADDR:PORT, ...`: a timeout is
        /// usually their fault, and the operator needs to know whose.
        nameservers: String,
    },
    /// The nameserver answered with an error code such as SERVFAIL or REFUSED.
    #[error("DNS server failure for {domain}: {code}")]
    ServerFailure {
        /// The name asked for.
        domain: String,
        /// The response code, as text (`SERVFAIL`, `REFUSED`...).
        code: String,
    },
    /// Any other failure to get an answer (socket errors, malformed answers).
    #[error("DNS lookup for {domain} failed: {message}")]
    Lookup {
        /// The name asked for.
        domain: String,
        /// The underlying error.
        message: String,
    },
}

impl ResolveError {
    /// True when asking again later will not change the answer: the mail
    /// should bounce (5.1.2 / 5.1.10 / 5.7.27 class outcomes).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::NullMx { .. }
                | Self::NoSuchDomain { .. }
                | Self::NoAddress { .. }
                | Self::InvalidDomain { .. }
        )
    }

    /// True when the mail should stay queued and the lookup be retried.
    pub fn is_transient(&self) -> bool {
        !self.is_permanent()
    }

    /// An enhanced status code (RFC 3463) that describes this outcome in a DSN
    /// or a delivery log.
    pub fn enhanced_status(&self) -> &'static str {
        match self {
            Self::NullMx { .. } => "5.1.10",
            Self::NoSuchDomain { .. } | Self::InvalidDomain { .. } => "5.1.2",
            Self::NoAddress { .. } => "5.4.4",
            Self::Timeout { .. } | Self::ServerFailure { .. } | Self::Lookup { .. } => "4.4.3",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let d = || "example.test".to_string();
        assert!(ResolveError::NullMx { domain: d() }.is_permanent());
        assert!(ResolveError::NoSuchDomain { domain: d() }.is_permanent());
        assert!(
            ResolveError::Timeout {
                domain: d(),
                nameservers: "127.0.0.1:53".into()
            }
            .is_transient()
        );
        let e = ResolveError::ServerFailure {
            domain: d(),
            code: "SERVFAIL".into(),
        };
        assert!(e.is_transient() && !e.is_permanent());
        assert_eq!(e.enhanced_status(), "4.4.3");
    }
}
