//! ward's integration tests: one test target that runs the real binaries
//! (`it-ward`, `it-ward-worker`) against real models and real sockets.

#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

mod api;
mod cli;
mod container;
mod exits;
mod floods;
mod grpc;
mod health;
mod image;
mod install;
mod liveness;
mod logs;
mod perf_analyzer;
mod prometheus;
mod protos;
mod registration;
mod sandbox;
mod schema;
mod server;
mod supervisor;
mod support;
mod tools;
mod validate;
mod worker;
