//! The supervisor is a child subreaper (so no plugin process escapes to
//! init), which makes it the parent of every orphan in its tree: when the
//! outer process of a jailed worker dies, the worker inside its pid namespace
//! dies too and is re-parented here. Nobody waits for such an orphan, so
//! without a reaper it stays a zombie for as long as ward runs.
//!
//! The reaper waits for exactly those orphans and never for a process ward
//! spawned itself — tokio waits for its own children and must get their exit
//! status. Spawns register their child's pid in [`OWNED`] while holding its
//! lock, and the reaper holds the same lock while it looks, so it can never
//! take a child that was spawned but not yet registered.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The pids of the children ward spawned and waits for itself.
static OWNED: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Runs `spawn` and registers the pid it returns as owned, atomically with
/// respect to the reaper.
pub fn spawn_owned<T>(
    spawn: impl FnOnce() -> std::io::Result<(T, Option<u32>)>,
) -> std::io::Result<T> {
    let mut owned = crate::sync::lock(&OWNED);
    let (child, pid) = spawn()?;
    if let Some(pid) = pid {
        owned.insert(pid);
    }
    Ok(child)
}

/// Forgets an owned pid once its exit status has been collected.
pub fn release(pid: u32) {
    crate::sync::lock(&OWNED).remove(&pid);
}

/// How often the reaper looks even without a SIGCHLD (signals coalesce).
const SWEEP: Duration = Duration::from_secs(2);

/// Reaps adopted orphans on every SIGCHLD and every [`SWEEP`] until `stop`.
pub async fn run(stop: CancellationToken) {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGCHLD stream; orphans are reaped every {SWEEP:?}");
            None
        }
    };
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = sweep.tick() => {}
            Some(()) = async {
                match sigchld.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        let mut owned = crate::sync::lock(&OWNED);
        // A child dropped without a wait (tokio reaps it) leaves its pid
        // here: forget pids that no longer exist.
        owned.retain(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        let reaped = reap_orphans(&owned);
        drop(owned);
        if reaped > 0 {
            tracing::debug!(reaped, "reaped orphaned processes");
        }
    }
}

/// Waits for every zombie child of this process that is not `owned`;
/// returns how many were reaped. Never blocks.
pub fn reap_orphans(owned: &BTreeSet<u32>) -> usize {
    zombie_children(std::process::id())
        .into_iter()
        .filter(|pid| !owned.contains(pid))
        .filter(|&pid| {
            let pid = Pid::from_raw(pid as i32);
            matches!(waitpid(pid, Some(WaitPidFlag::WNOHANG)), Ok(s) if s.pid() == Some(pid))
        })
        .count()
}

/// The pids of `parent`'s children that are zombies, from /proc.
pub fn zombie_children(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_stat(&stat))
                .is_some_and(|(state, ppid)| state == 'Z' && ppid == parent)
        })
        .collect()
}

/// The state and parent pid from a `/proc/<pid>/stat` line. The command name
/// is in parentheses and may itself hold spaces and parentheses, so the
/// fields are read after the last `)`.
fn parse_stat(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_after_the_command_name() {
        assert_eq!(parse_stat("42 (ward-worker) Z 7 42 42 0"), Some(('Z', 7)));
        assert_eq!(parse_stat("42 (a) b) (c) S 1 1 1"), Some(('S', 1)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn orphans_are_reaped_and_owned_children_are_left_to_their_waiter() {
        // Two children that exit at once: one owned, one not.
        let spawn = || {
            std::process::Command::new("true")
                .spawn()
                .expect("spawn true")
        };
        let mut owned_child = spawn();
        // Never waited for here: it stands for an orphan, which the reaper must take.
        #[allow(clippy::zombie_processes)]
        let stray = spawn();
        let owned = BTreeSet::from([owned_child.id()]);
        let me = std::process::id();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // Both become zombies of this process (bounded wait).
        while zombie_children(me)
            .iter()
            .filter(|p| [owned_child.id(), stray.id()].contains(p))
            .count()
            < 2
        {
            assert!(
                std::time::Instant::now() < deadline,
                "children never exited"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(reap_orphans(&owned) >= 1);
        assert!(!zombie_children(me).contains(&stray.id()));
        // The owned child's status is still there for its owner.
        let status = owned_child
            .wait()
            .expect("the owner still waits for its child");
        assert!(status.success());
    }
}
