//! What ward tells the outside: Prometheus metrics, and the capability
//! declaration with the reporter that posts it.

pub mod capability;
pub mod metrics;
pub mod process;
pub mod reporter;
