//! How much memory this supervisor may use: the host's `MemTotal`, or the
//! limit of the cgroup it runs in when that is lower — inside a container or
//! a Kubernetes pod the cgroup limit is the real ceiling, and a budget from
//! the host's memory would admit models the pod cannot hold.

use std::path::{Path, PathBuf};

/// Memory available to this process in MB: the lower of the host's memory
/// and its cgroup's limit (v2 `memory.max`, v1 `memory.limit_in_bytes`).
pub fn limit_mb() -> Option<u64> {
    let host = crate::host::hardware::mem_total_mb(&std::fs::read_to_string("/proc/meminfo").ok()?);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup_limit_bytes(&c, |p| std::fs::read_to_string(p).ok()))
        .map(|bytes| bytes >> 20);
    match (host, cgroup) {
        (Some(h), Some(c)) => Some(h.min(c)),
        (h, c) => h.or(c),
    }
}

/// The memory limit of the cgroup `proc_self_cgroup` names, read through
/// `read`; `None` when there is none ("max", or v1's "unlimited" near 2^63).
/// The cgroup's own directory is tried first, then the mount's root (what a
/// container with its own cgroup namespace sees).
pub fn cgroup_limit_bytes(
    proc_self_cgroup: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<u64> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            // The unified (v2) hierarchy.
            candidates.push(Path::new("/sys/fs/cgroup").join(path).join("memory.max"));
            candidates.push(PathBuf::from("/sys/fs/cgroup/memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            let mount = Path::new("/sys/fs/cgroup/memory");
            candidates.push(mount.join(path).join("memory.limit_in_bytes"));
            candidates.push(mount.join("memory.limit_in_bytes"));
        }
    }
    candidates.iter().find_map(|p| {
        let text = read(p)?;
        let text = text.trim();
        if text == "max" {
            return None;
        }
        // v1 reports "no limit" as a page-rounded i64::MAX.
        text.parse::<u64>().ok().filter(|b| *b < (1 << 60))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn files(pairs: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = pairs
            .iter()
            .map(|(p, v)| (PathBuf::from(p), (*v).to_owned()))
            .collect();
        move |p| map.get(p).cloned()
    }

    #[test]
    fn a_v1_memory_limit_is_read_from_the_cgroups_own_directory() {
        let cg = "12:pids:/pod\n5:memory:/kubepods/pod1\n0::/\n";
        let read = files(&[(
            "/sys/fs/cgroup/memory/kubepods/pod1/memory.limit_in_bytes",
            "1073741824\n",
        )]);
        assert_eq!(cgroup_limit_bytes(cg, read), Some(1 << 30));
    }

    #[test]
    fn a_v2_limit_and_a_namespaced_root_are_found() {
        let read = files(&[("/sys/fs/cgroup/memory.max", "536870912\n")]);
        assert_eq!(cgroup_limit_bytes("0::/\n", &read), Some(512 << 20));
        // Inside a cgroup namespace the path names a directory this view lacks.
        assert_eq!(
            cgroup_limit_bytes("0::/some/where\n", read),
            Some(512 << 20)
        );
    }

    #[test]
    fn no_limit_reads_as_none() {
        let cg = "5:memory:/\n0::/\n";
        let read = files(&[
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712",
            ),
            ("/sys/fs/cgroup/memory.max", "max"),
        ]);
        assert_eq!(cgroup_limit_bytes(cg, read), None);
        assert_eq!(cgroup_limit_bytes("", files(&[])), None);
    }
}
