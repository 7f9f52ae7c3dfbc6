//! A running worker, whatever launched it: a native child process (sandboxed
//! or not) or a Docker container. The version's owner task sees only this
//! interface, so restarts, deadlines, crash classification and stopping work
//! the same in both modes.

use std::os::unix::process::ExitStatusExt;

use nix::sys::signal::Signal;
use tokio::process::Child;

use crate::container::ContainerWorker;

/// How a worker ended, in either mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The exit code, when it exited (a container's, or the sandbox's pid 1,
    /// reports a signal `n` as `128 + n`).
    pub code: Option<i32>,
    /// The signal that killed it (for a container, read from an exit code
    /// of `128 + n`, which is how its init reports a signal).
    pub signal: Option<i32>,
    /// Docker's own verdict: the container's cgroup ran out of memory.
    pub oom_killed: bool,
}

impl WorkerStatus {
    pub fn from_exit(status: std::process::ExitStatus) -> WorkerStatus {
        WorkerStatus {
            code: status.code(),
            signal: status.signal(),
            oom_killed: false,
        }
    }

    /// The signal that ended the worker; `relayed` reads an exit code above
    /// 128 as `128 + signal`, which is how a process that stood between the
    /// supervisor and the worker (the jail's pid 1, a container's init)
    /// reports its child's death.
    pub fn signal(&self, relayed: bool) -> Option<i32> {
        self.signal.or(self
            .code
            .filter(|c| relayed && *c > 128 && *c < 128 + 65)
            .map(|c| c - 128))
    }

    pub fn describe(&self) -> String {
        let name = |sig: i32| Signal::try_from(sig).map_or("unknown", |s| s.as_str());
        let mut s = match (self.code, self.signal) {
            (Some(code), Some(sig)) => format!("exit status {code} ({})", name(sig)),
            (Some(code), None) => format!("exit status {code}"),
            (None, Some(sig)) => format!("signal {sig} ({})", name(sig)),
            (None, None) => "unknown status".to_owned(),
        };
        if self.oom_killed {
            s.push_str(", OOMKilled");
        }
        s
    }
}

/// A started worker.
pub enum WorkerProcess {
    Native(Child),
    Container(Box<ContainerWorker>),
}

impl WorkerProcess {
    /// Waits for the worker to end. Cancel-safe: a `select!` may drop the
    /// future and call again.
    pub async fn wait(&mut self) -> Result<WorkerStatus, String> {
        match self {
            WorkerProcess::Native(child) => child
                .wait()
                .await
                .map(WorkerStatus::from_exit)
                .map_err(|e| format!("wait failed: {e}")),
            WorkerProcess::Container(c) => c.wait().await,
        }
    }

    /// Sends `signal` to the whole worker: a native worker's process group
    /// (so its plugin children get it too), or a container's init (which
    /// passes it on; SIGKILL ends the container outright).
    pub async fn signal(&mut self, signal: Signal) {
        match self {
            WorkerProcess::Native(child) => {
                if let Some(pid) = child.id() {
                    let _ =
                        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
                }
            }
            WorkerProcess::Container(c) => c.signal(signal).await,
        }
    }

    /// The container's name, in container mode.
    pub fn container_name(&self) -> Option<&str> {
        match self {
            WorkerProcess::Native(_) => None,
            WorkerProcess::Container(c) => Some(c.name()),
        }
    }

    /// Whether a worker's exit code above 128 stands for a signal.
    pub fn relays_signals(&self) -> bool {
        matches!(self, WorkerProcess::Container(_))
    }

    /// Frees what the worker held once it has ended (a container is removed).
    pub async fn release(self) {
        match self {
            WorkerProcess::Native(_) => {}
            WorkerProcess::Container(c) => c.remove().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_signals_read_as_signals() {
        let s = WorkerStatus {
            code: Some(137),
            signal: None,
            oom_killed: false,
        };
        assert_eq!(s.signal(true), Some(9));
        assert_eq!(s.signal(false), None);
        let plain = WorkerStatus {
            code: Some(70),
            signal: None,
            oom_killed: false,
        };
        assert_eq!(plain.signal(true), None);
        assert_eq!(
            WorkerStatus {
                code: Some(137),
                signal: None,
                oom_killed: true
            }
            .describe(),
            "exit status 137, OOMKilled"
        );
        assert_eq!(
            WorkerStatus {
                code: Some(137),
                signal: Some(9),
                oom_killed: false
            }
            .describe(),
            "exit status 137 (SIGKILL)"
        );
    }
}
