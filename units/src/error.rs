//! What went wrong reading a unit.

/// A duration or size that could not be read; the text says what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not a duration: `text` is what was given, `reason` what the parser objected to.
    #[error("invalid duration {text:?}: {reason} (write it like \"30s\", \"5m\", \"250ms\")")]
    Duration {
        /// The text as given.
        text: String,
        /// Why it was refused.
        reason: String,
    },
    /// Not a size: `text` is what was given, `reason` what the parser objected to.
    #[error(
        "invalid size {text:?}: {reason} (write it like \"50MiB\", \"2GB\" or a number of bytes)"
    )]
    Size {
        /// The text as given.
        text: String,
        /// Why it was refused.
        reason: String,
    },
}
