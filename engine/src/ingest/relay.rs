//! The relay policy for one RCPT: the recipient and queue it becomes, or the
//! reply that refuses it. Pure, so each reply is tested without a socket.

use volley_smtp::{EnhancedCode, ForwardPath, Reply};

use crate::config::IngestConfig;

/// An accepted recipient: the address to deliver to and its routing key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Accepted {
    pub(crate) rcpt: String,
    pub(crate) key: String,
}

/// Decides one `RCPT TO` under the current ingest settings.
///
/// The domainless `<Postmaster>` that RFC 5321 4.5.1 obliges a server to
/// accept goes to `ingest.postmaster`; Volley has no local mailboxes, so when
/// none is configured it is refused with 550 5.7.1 and a text that says which
/// setting is missing.
pub(crate) fn rcpt_policy(ingest: &IngestConfig, path: &ForwardPath) -> Result<Accepted, Reply> {
    // The configured postmaster is relayed whatever `relay_domains` says.
    let (mailbox, relay_checked) = match path {
        ForwardPath::Mailbox(m) => (m, true),
        ForwardPath::Postmaster => {
            let m = ingest.postmaster.as_ref().ok_or_else(|| {
                Reply::new(
                    550,
                    EnhancedCode::new(5, 7, 1),
                    "no postmaster address is configured on this relay (ingest.postmaster)",
                )
            })?;
            (m, false)
        }
    };
    let key = mailbox.domain.routing_key().map_err(bad_domain)?;
    if relay_checked && !ingest.may_relay_to(&key) {
        return Err(Reply::new(
            550,
            EnhancedCode::new(5, 7, 1),
            format!("relaying to {key} is not allowed"),
        ));
    }
    Ok(Accepted {
        rcpt: mailbox.to_string(),
        key,
    })
}

fn bad_domain(e: volley_smtp::AddressError) -> Reply {
    Reply::new(
        501,
        EnhancedCode::new(5, 1, 2),
        format!("bad recipient domain: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use volley_smtp::{Mailbox, parse_forward_path};

    use super::*;

    fn decide(ingest: &IngestConfig, path: &str) -> Result<Accepted, String> {
        rcpt_policy(ingest, &parse_forward_path(path).unwrap()).map_err(|r| r.to_string())
    }

    #[test]
    fn bare_postmaster_goes_to_the_configured_address() {
        let ingest = IngestConfig {
            relay_domains: vec!["example.org".into()],
            postmaster: Some(Mailbox::parse("hostmaster@Ops.Example.COM").unwrap()),
            ..IngestConfig::default()
        };
        let want = Accepted {
            rcpt: "hostmaster@Ops.Example.COM".into(),
            key: "ops.example.com".into(),
        };
        // Relay domains do not apply to the address the operator chose.
        assert_eq!(decide(&ingest, "<Postmaster>"), Ok(want));
        assert!(decide(&ingest, "<postmaster@ops.example.com>").is_err());
    }

    #[test]
    fn bare_postmaster_without_an_address_is_refused_precisely() {
        let e = decide(&IngestConfig::default(), "<POSTMASTER>").unwrap_err();
        assert!(
            e.starts_with("550 5.7.1 no postmaster address is configured"),
            "{e}"
        );
        assert!(e.contains("ingest.postmaster"), "{e}");
    }

    #[test]
    fn the_postmaster_setting_is_checked_with_its_line() {
        let c = crate::Config::from_toml("[ingest]\npostmaster = \"pm@example.com\"\n").unwrap();
        assert_eq!(
            c.ingest.postmaster,
            Some(Mailbox::parse("pm@example.com").unwrap())
        );
        for bad in ["postmaster", "pm@bad_domain", "pm@-x.example"] {
            let text = format!("[ingest]\n\npostmaster = \"{bad}\"\n");
            let e = crate::Config::from_toml(&text).unwrap_err();
            assert_eq!(e[0].line, Some(3), "{e:?}");
            assert!(e[0].message.contains("invalid postmaster"), "{e:?}");
        }
    }

    #[test]
    fn mailboxes_follow_relay_domains() {
        let ingest = IngestConfig {
            relay_domains: vec!["*.example.com".into()],
            ..IngestConfig::default()
        };
        let ok = decide(&ingest, "<Postmaster@A.Example.com>").unwrap();
        assert_eq!(
            (ok.rcpt.as_str(), ok.key.as_str()),
            ("Postmaster@A.Example.com", "a.example.com")
        );
        let e = decide(&ingest, "<u@example.org>").unwrap_err();
        assert!(
            e.starts_with("550 5.7.1 relaying to example.org is not allowed"),
            "{e}"
        );
    }
}
