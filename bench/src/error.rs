//! Typed errors of the bench library.

use std::io;

use thiserror::Error;

/// A scenario that cannot be used.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// Neither a built-in name nor a readable file.
    #[error("no built-in scenario {name:?} and no such file ({source})")]
    NotFound {
        /// What was asked for.
        name: String,
        /// Why the file could not be read.
        source: io::Error,
    },
    /// The TOML does not parse or has unknown fields.
    #[error("scenario TOML: {0}")]
    Toml(#[from] toml::de::Error),
    /// Parsed, but does not make sense (no domains, a change for an unknown
    /// domain, too many MX hosts...).
    #[error("scenario: {0}")]
    Invalid(String),
}

/// Starting or running the simulated internet or the Composer load failed.
#[derive(Debug, Error)]
pub enum BenchError {
    /// The scenario is unusable.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A socket could not be bound, connected or used.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: io::Error,
    },
    /// The server under test broke the protocol or refused the session.
    #[error("SMTP session with {target}: {detail}")]
    Protocol {
        /// Where it was talking to.
        target: String,
        /// What went wrong.
        detail: String,
    },
    /// A test certificate or TLS configuration could not be made.
    #[error("{0}")]
    Setup(String),
}

impl BenchError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// True when trying again may help (a refused or reset connection),
    /// false for a bad scenario or a protocol violation.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}
