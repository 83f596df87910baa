//! The one rule for a mail domain's routing key: no trailing dot, lower
//! case, internationalized labels in IDNA A-label form (UTS #46, strict).
//! `Bücher.Example.` and `xn--bcher-kva.example` are the same key, so a
//! queue, a relay domain or a DNS cache entry written either way matches
//! the recipients of that domain. The SMTP parser, the resolver and the
//! engine's configuration all use this function.

/// Why a name cannot be a routing key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Longer than the 255 octets DNS allows.
    #[error("domain name longer than 255 octets")]
    TooLong,
    /// Not a valid host name, nor a valid internationalized one.
    #[error("invalid domain name")]
    Invalid,
}

/// The routing key of host name `domain`.
///
/// ASCII names (the common case) take a fast path that only checks LDH
/// syntax and lower-cases; names with U-labels or `xn--` labels go through
/// IDNA, which also checks that an A-label decodes.
pub fn routing_key(domain: &str) -> Result<String, DomainError> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.len() > 255 {
        return Err(DomainError::TooLong);
    }
    if domain.is_ascii() && !has_ace_label(domain) {
        check_ldh(domain)?;
        return Ok(domain.to_ascii_lowercase());
    }
    let ace = idna::domain_to_ascii_strict(domain).map_err(|_| DomainError::Invalid)?;
    if ace.is_empty() || ace.len() > 255 {
        return Err(DomainError::Invalid);
    }
    Ok(ace)
}

/// Whether a label starts with the IDNA prefix `xn--`.
pub fn has_ace_label(domain: &str) -> bool {
    domain.split('.').any(|l| {
        l.as_bytes()
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"xn--"))
    })
}

/// RFC 5321 `Domain`: dot-separated sub-domains of letters, digits and
/// hyphens, each starting and ending with a letter or digit.
pub fn check_ldh(domain: &str) -> Result<(), DomainError> {
    if domain.is_empty() {
        return Err(DomainError::Invalid);
    }
    for label in domain.split('.') {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
        if !ok {
            return Err(DomainError::Invalid);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_trailing_dot_and_unicode_labels_give_one_key() {
        for name in [
            "bücher.example",
            "Bücher.Example.",
            "xn--bcher-kva.example",
            "XN--BCHER-KVA.EXAMPLE.",
        ] {
            assert_eq!(
                routing_key(name).unwrap(),
                "xn--bcher-kva.example",
                "{name}"
            );
        }
        assert_eq!(
            routing_key("Mail.Example.COM.").unwrap(),
            "mail.example.com"
        );
    }

    #[test]
    fn what_cannot_be_a_domain_is_refused() {
        for bad in [
            "",
            "a..b",
            "-a.example",
            "a_b.example",
            "*foo",
            "xn--zz.example",
        ] {
            assert!(routing_key(bad).is_err(), "{bad:?}");
        }
        assert_eq!(routing_key(&"a.".repeat(130)), Err(DomainError::TooLong));
    }
}
