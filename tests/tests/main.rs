//! ward's integration tests: one test target that runs the real binaries
//! (`it-ward`, `it-ward-worker`) against real models and real sockets.

mod validate;
