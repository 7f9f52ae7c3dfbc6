//! One model version: its key, status and events ([`status`]), the handle
//! others hold ([`handle`]), the task that owns its worker ([`owner`]), the
//! check of every answer ([`verdict`]), and the pure policies the task
//! follows: [`lifecycle`], [`restart`], [`health`], plus its [`logs`].

pub mod handle;
pub mod health;
pub mod lifecycle;
pub mod liveness;
pub mod logs;
pub mod owner;
pub mod restart;
pub mod status;
pub mod verdict;
