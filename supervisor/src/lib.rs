//! The ward supervisor: finds model plugins on disk, runs each model version
//! in its own worker, and serves them.
//!
//! The `ward` binary is a thin wrapper around [`cli::main`], so that the
//! integration tests can build the same entry point under another name.

pub mod api;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod container;
pub mod discovery;
pub mod errors;
pub mod hardware;
pub mod health;
pub mod host;
pub mod ipc;
pub mod isolation;
pub mod lifecycle;
pub mod logs;
pub mod manager;
pub mod metrics;
pub mod openapi;
pub mod process;
pub mod reporter;
pub mod restart;
pub mod sandbox;
pub mod serve;
pub mod spawn;
pub mod tensor_json;
pub mod version;
