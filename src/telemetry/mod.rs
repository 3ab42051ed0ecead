//! Telemetry: Prometheus metrics, the access log, and the one place every outcome is recorded.
//! Labels carry route templates, methods and the fixed names of [`names`] only — never paths,
//! tokens or subjects.

mod access;
mod log;
mod metrics;
pub mod names;
mod record;

pub use access::AccessLine;
pub use log::{LOG_BUFFER_MAX, LOG_FLUSH_EVERY, LogGuard, LogLine, LogSink, init_logging};
pub use metrics::{Metrics, RouteHandles, method_label};
pub use names::NO_ROUTE;
pub use record::{Outcome, Telemetry};
