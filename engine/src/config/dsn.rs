//! The `[dsn]` section: whether Volley sends delivery status notifications
//! (bounce messages) back to the envelope sender, and when it warns of a
//! delay.

use std::time::Duration;

use serde::Deserialize;

/// DSN settings. On by default: a sender learns of every recipient Volley
/// accepted and could not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DsnSettings {
    /// Send DSNs (and advertise the DSN extension on ingest). An operator
    /// who processes the delivery log or the event feed instead turns it
    /// off.
    pub enabled: bool,
    /// A recipient whose Composer asked for delay notices (NOTIFY=DELAY)
    /// and that is still not delivered this long after it was accepted
    /// gets one; unset (the default for bulk mail): never.
    #[serde(with = "volley_units::serde::option_duration")]
    pub delay_after: Option<Duration>,
}

impl Default for DsnSettings {
    fn default() -> Self {
        DsnSettings {
            enabled: true,
            delay_after: None,
        }
    }
}
