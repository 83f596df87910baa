//! Volley's load generator and simulated internet.
//!
//! - A **simulated internet**: a test DNS server (from `volley-dns`) and MX
//!   sinks on loopback addresses, each domain with a hidden [`Capacity`]
//!   (connections, rate, latency, faults) enforced by a sans-IO
//!   [`DomainModel`]; a provider's many domains share one capacity, as the
//!   receiver meters the sending address ([`SimReceiver`]).
//! - The **Composer load**: personalized messages with a unique id header,
//!   spread over domains by weight ([`DomainMix`]), sent over SMTP or LMTP.
//! - **Accounting** ([`reconcile`]) of what was sent against what the sinks
//!   kept, and **reports** (JSON, HTML, text).
//!
//! It speaks only SMTP and DNS to the server under test, so the same tool
//! measures Volley, Postfix, PowerMTA or KumoMTA.

mod capacity;
mod compose;
mod counters;
mod drive;
mod error;
mod files;
mod html;
mod internet;
mod ledger;
mod load;
mod message;
mod mx;
mod procstat;
mod report;
mod scenario;
mod sim_domain;
mod sink;
mod soak;
mod test_ca;

pub use crate::capacity::{
    Capacity, ConnectVerdict, DataVerdict, DomainModel, RcptVerdict, is_unknown_mailbox,
};
pub use crate::compose::{
    ComposeConfig, ComposeHandle, ComposeOutcome, ComposeProgress, run_compose, spawn_compose,
};
pub use crate::counters::{Counts, DomainCounters};
pub use crate::drive::{RunSettings, drive, wait_for_listener};
pub use crate::error::{BenchError, ScenarioError};
pub use crate::files::{load_jsonl, save_jsonl};
pub use crate::internet::{InternetOptions, SimulatedInternet, parse_routes};
pub use crate::ledger::{Accounting, Delivery, SentRecord, reconcile};
pub use crate::load::{DEFAULT_TEMPLATE, DomainMix, LoadSpec, Planned, Planner, Protocol};
pub use crate::message::{
    Composed, ID_HEADER, Inspected, Inspector, SENT_HEADER, compose, unix_micros,
};
pub use crate::mx::{DataEnd, Flow, MxService, MxSession, MxSink, SinkTls};
pub use crate::procstat::{process_memory, process_usage};
pub use crate::report::{
    ComposerSummary, DomainReport, EngineUsage, LatencySummary, Report, ReportInput, best_rate,
    compare,
};
pub use crate::scenario::{
    ChangeEntry, DEFAULT_SCENARIO, DomainEntry, GroupEntry, MxNames, ProviderEntry, Scenario,
    SimDomain, SimReceiver, is_expected_bounce,
};
pub use crate::soak::{
    DuplicateCopy, FaultKind, FaultWindow, MemorySample, MinuteRow, SOAK_SETTLE, SoakEvent,
    SoakMeasures, SoakPlan, SoakSettings, SoakVerdict, duplicate_copies,
};
pub use crate::test_ca::{Leaf, TestCa, client_config_trusting, server_config_from_files};
