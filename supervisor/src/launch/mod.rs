//! How a worker starts: the launch plan (pure), natively (sandboxed or not)
//! or in a container, the handshake both share, and the IPC connection the
//! owner task talks over. Inside, nothing points back up:
//! `worker → {native, container} → handshake → {ipc, status}`, with `plan`
//! beside them.

pub mod container;
pub mod handshake;
pub mod ipc;
pub mod native;
pub mod plan;
pub mod reaper;
pub mod server_image;
pub mod status;
pub mod worker;
