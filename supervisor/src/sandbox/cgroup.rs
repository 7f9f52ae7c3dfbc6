//! Per-worker control groups: kernel-enforced caps on a worker's memory,
//! process count and CPU time that cover every process the plugin starts.
//!
//! rlimits cannot do this job: `RLIMIT_AS` counts address space rather than
//! memory, and `RLIMIT_NPROC` counts all processes of a uid system-wide and
//! does not bind root at all. A cgroup does, and its counters tell an OOM kill
//! apart from an ordinary crash.
//!
//! The supervisor runs as root and creates `<hierarchy>/<root>/<worker>`
//! before it spawns a worker; the jailer's first step is to write its own pid
//! to every [`WorkerCgroup::procs_files`] path, so that the plugin and all it
//! forks are born inside.
//!
//! Both layouts are handled, controller by controller: a controller mounted as
//! a v1 hierarchy is used there (one directory per v1 hierarchy), otherwise the
//! unified v2 hierarchy is used when it offers the controller. Hosts mix the
//! two: the machines this project is tested on bind memory and pids to v1 and
//! leave the v2 mount with `hugetlb` only. Every controller is best effort: one
//! that cannot be set up is named in [`WorkerCgroup::missing`], and the caller
//! decides whether that is fatal.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::{AccessFlags, Pid, access};
use serde::Serialize;
use tracing::{debug, warn};

/// The controllers a worker cgroup sets limits with, in the order they are
/// reported.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// The CFS period that CPU quotas are expressed in (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest CFS quota the kernel accepts.
const CPU_QUOTA_MIN_US: u64 = 1_000;

/// How often `remove` retries an `rmdir` that failed with `EBUSY`, and how
/// long it waits in between: members that were just killed leave their cgroup
/// within a few milliseconds.
const REMOVE_ATTEMPTS: u32 = 10;
const REMOVE_PAUSE: Duration = Duration::from_millis(2);

/// An upper bound on the read-and-kill rounds of a v1 `kill_all`; each round
/// only has work when members forked since the previous one.
const KILL_ROUNDS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroup name {name:?}: it must be one non-empty path component")]
    InvalidName { name: String },
}

/// The limits of one worker's cgroup.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupLimits {
    /// Memory cap in bytes (page cache included); swap is capped so that it
    /// cannot extend it.
    pub memory_bytes: u64,
    /// Most processes and threads alive at once.
    pub pids_max: u64,
    /// CPU bandwidth in CPUs (`1.5` = one and a half CPUs); `None` leaves the
    /// CPU time unlimited and the cpu controller unused.
    pub cpu_quota: Option<f64>,
}

/// Which cgroup layout the host's controllers live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// None of [`CONTROLLERS`] is mounted.
    None,
    V1,
    V2,
    /// Some controllers in v1 hierarchies, others in the unified one.
    Hybrid,
}

/// What [`available`] found: where each controller lives and whether this
/// process can create cgroups there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupSupport {
    pub version: CgroupVersion,
    /// Mounted and writable by this process.
    pub memory: bool,
    pub pids: bool,
    pub cpu: bool,
    /// Each mounted controller's hierarchy (its mount point), usable or not.
    pub hierarchies: BTreeMap<String, PathBuf>,
}

impl CgroupSupport {
    /// Whether the named controller (`"memory"`, `"pids"`, `"cpu"`) is usable.
    pub fn usable(&self, controller: &str) -> bool {
        match controller {
            "memory" => self.memory,
            "pids" => self.pids,
            "cpu" => self.cpu,
            _ => false,
        }
    }
}

/// Finds the controllers' hierarchies and checks that they are writable.
///
/// Blocking, and fast: it reads `/proc/self/mountinfo` and a few files.
pub fn available() -> CgroupSupport {
    let hierarchies = discover();
    let mut support = CgroupSupport {
        version: CgroupVersion::None,
        memory: false,
        pids: false,
        cpu: false,
        hierarchies: BTreeMap::new(),
    };
    let (mut v1, mut v2) = (false, false);
    for h in &hierarchies {
        match h.version {
            Version::V1 => v1 = true,
            Version::V2 => v2 = true,
        }
        let usable = h.writable();
        for &controller in &h.controllers {
            support
                .hierarchies
                .insert(controller.to_owned(), h.mount.clone());
            match controller {
                "memory" => support.memory = usable,
                "pids" => support.pids = usable,
                "cpu" => support.cpu = usable,
                _ => {}
            }
        }
    }
    support.version = match (v1, v2) {
        (false, false) => CgroupVersion::None,
        (true, false) => CgroupVersion::V1,
        (false, true) => CgroupVersion::V2,
        (true, true) => CgroupVersion::Hybrid,
    };
    support
}

/// One worker's cgroup: a directory in each hierarchy that holds one of the
/// controllers it uses.
///
/// Dropping it kills whatever is still inside and removes the directories.
///
/// (See also [`MemoryFiles`]: where the metrics read its memory use.)
/// A worker cgroup's memory files: its use now and its peak, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryFiles {
    pub current: PathBuf,
    pub peak: PathBuf,
}

impl MemoryFiles {
    fn read(path: &Path) -> Option<u64> {
        fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// The use now; `None` once the cgroup is gone.
    pub fn current(&self) -> Option<u64> {
        Self::read(&self.current)
    }

    /// The peak (v2 needs Linux 5.19 for `memory.peak`).
    pub fn peak(&self) -> Option<u64> {
        Self::read(&self.peak)
    }
}

#[derive(Debug)]
pub struct WorkerCgroup {
    worker: String,
    dirs: Vec<WorkerDir>,
    missing: Vec<String>,
}

#[derive(Debug)]
struct WorkerDir {
    version: Version,
    /// `<mount>/<root>`, shared by all workers of one supervisor.
    parent: PathBuf,
    /// `<mount>/<root>/<worker>`.
    path: PathBuf,
    /// The controllers whose limits were written here.
    controllers: Vec<&'static str>,
}

impl WorkerCgroup {
    /// Creates `<root_name>/<worker>` in every hierarchy a needed controller
    /// lives in and writes the limits.
    ///
    /// `root_name` is per supervisor (`ward-<pid>`), so that
    /// [`cleanup_stale`] can tell its leftovers from a live run's; `worker`
    /// is unique among its live workers. A directory that already exists is
    /// reused. Only a bad name is an error: a controller that cannot be set
    /// up is recorded in [`WorkerCgroup::missing`].
    pub fn create(
        root_name: &str,
        worker: &str,
        limits: &CgroupLimits,
    ) -> Result<WorkerCgroup, CgroupError> {
        check_name(root_name)?;
        check_name(worker)?;
        let cpu_wanted = limits.cpu_quota.is_some();
        let cpu_quota_us = limits.cpu_quota.and_then(cfs_quota_us);
        let mut cgroup = WorkerCgroup {
            worker: worker.to_owned(),
            dirs: Vec::new(),
            missing: Vec::new(),
        };
        let mut found = BTreeSet::new();

        for h in discover() {
            // Without a CPU quota the cpu hierarchy has nothing to enforce.
            let controllers: Vec<&'static str> = h
                .controllers
                .iter()
                .copied()
                .filter(|&c| c != "cpu" || cpu_wanted)
                .collect();
            if controllers.is_empty() {
                continue;
            }
            found.extend(controllers.iter().copied());
            let parent = h.mount.join(root_name);
            let path = parent.join(worker);

            if h.version == Version::V2 {
                // Controllers are handed down one level at a time: the mount's
                // children get them from its subtree_control, ours from
                // `parent`'s. A failure here shows up below as a missing
                // interface file.
                enable_v2(&h.mount, &controllers);
            }
            let made = make_dirs(&parent, &path, |parent| {
                if h.version == Version::V2 {
                    enable_v2(parent, &controllers);
                }
            });
            if let Err(error) = made {
                warn!(worker, path = %path.display(), %error, "cgroup: cannot create");
                cgroup
                    .missing
                    .extend(controllers.iter().map(|&c| c.to_owned()));
                continue;
            }

            let mut dir = WorkerDir {
                version: h.version,
                parent,
                path,
                controllers: Vec::new(),
            };
            for controller in controllers {
                match dir.apply(controller, limits, cpu_quota_us) {
                    Ok(()) => dir.controllers.push(controller),
                    Err(error) => {
                        warn!(worker, controller, path = %dir.path.display(), %error, "cgroup: cannot set limit");
                        cgroup.missing.push(controller.to_owned());
                    }
                }
            }
            cgroup.dirs.push(dir);
        }

        for controller in CONTROLLERS {
            let wanted = controller != "cpu" || cpu_wanted;
            if wanted && !found.contains(controller) {
                cgroup.missing.push(controller.to_owned());
            }
        }
        cgroup
            .missing
            .sort_by_key(|name| CONTROLLERS.iter().position(|c| c == name));
        debug!(worker, dirs = ?cgroup.dirs.iter().map(|d| &d.path).collect::<Vec<_>>(), missing = ?cgroup.missing, "cgroup created");
        Ok(cgroup)
    }

    /// Controllers (of [`CONTROLLERS`]) that could not be set up, so that
    /// their limit is not enforced. The caller decides whether that is fatal.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }

    /// The `cgroup.procs` file of each of the worker's directories: writing a
    /// pid to all of them moves that process in.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.path.join("cgroup.procs"))
            .collect()
    }

    /// How many times the kernel's OOM killer has killed a member; `None`
    /// without a memory controller or on kernels that do not count.
    pub fn oom_kills(&self) -> Option<u64> {
        let dir = self.memory_dir()?;
        let file = match dir.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        let text = fs::read_to_string(dir.path.join(file)).ok()?;
        keyed_value(&text, "oom_kill")
    }

    /// The highest memory use recorded, in bytes (v2 needs Linux 5.19 for
    /// `memory.peak`).
    pub fn memory_peak(&self) -> Option<u64> {
        let dir = self.memory_dir()?;
        let file = match dir.version {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        fs::read_to_string(dir.path.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGKILLs every member, including processes that left the worker's
    /// process group.
    ///
    /// v2 has `cgroup.kill`, which the kernel applies atomically. v1 has no
    /// such file, so the members are read and killed in rounds until a round
    /// finds no member it has not signalled: a process with a pending SIGKILL
    /// cannot fork, so each round can only find children forked before it.
    /// The signals are sent, not awaited: members leave as they die.
    pub fn kill_all(&self) {
        for dir in self.dirs.iter().filter(|d| d.version == Version::V2) {
            let file = dir.path.join("cgroup.kill");
            if file.exists()
                && let Err(error) = write_value(&file, "1")
            {
                debug!(worker = %self.worker, %error, "cgroup.kill failed; killing members one by one");
            }
        }
        let own = Pid::this();
        let mut signalled = BTreeSet::new();
        for _ in 0..KILL_ROUNDS {
            let fresh: Vec<Pid> = self
                .members()
                .into_iter()
                .filter(|&pid| pid != own && !signalled.contains(&pid))
                .collect();
            if fresh.is_empty() {
                return;
            }
            for pid in fresh {
                // ESRCH: it died since the read.
                let _ = kill(pid, Signal::SIGKILL);
                signalled.insert(pid);
            }
        }
        warn!(worker = %self.worker, "cgroup: members kept appearing while being killed");
    }

    /// Removes the worker's directories, and the supervisor's root directory
    /// once no other worker uses it. Never fails: what cannot be removed is
    /// logged (and is found again by [`cleanup_stale`] on the next start).
    pub fn remove(&self) {
        for dir in &self.dirs {
            remove_dir_retrying(&dir.path);
            // Busy or not empty while other workers of this supervisor run.
            let _ = fs::remove_dir(&dir.parent);
        }
    }

    /// The process ids in any of the worker's directories.
    fn members(&self) -> BTreeSet<Pid> {
        self.procs_files()
            .iter()
            .filter_map(|file| fs::read_to_string(file).ok())
            .flat_map(|text| {
                text.lines()
                    .filter_map(|line| line.trim().parse().ok())
                    .map(Pid::from_raw)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Where the worker's memory use is read, when it has a memory
    /// controller: the files of its current use and of its peak.
    pub fn memory_files(&self) -> Option<MemoryFiles> {
        let dir = self.memory_dir()?;
        let (current, peak) = match dir.version {
            Version::V1 => ("memory.usage_in_bytes", "memory.max_usage_in_bytes"),
            Version::V2 => ("memory.current", "memory.peak"),
        };
        Some(MemoryFiles {
            current: dir.path.join(current),
            peak: dir.path.join(peak),
        })
    }

    fn memory_dir(&self) -> Option<&WorkerDir> {
        self.dirs.iter().find(|d| d.controllers.contains(&"memory"))
    }
}

impl Drop for WorkerCgroup {
    fn drop(&mut self) {
        // A member still inside would keep the directories busy: nothing of
        // a worker may outlive its cgroup.
        self.kill_all();
        self.remove();
    }
}

impl WorkerDir {
    fn apply(
        &self,
        controller: &str,
        limits: &CgroupLimits,
        cpu_quota_us: Option<u64>,
    ) -> io::Result<()> {
        let dir = &self.path;
        match (controller, self.version) {
            ("memory", Version::V1) => {
                write_value(
                    &dir.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
                // Memory plus swap, so that swap cannot extend the cap. The
                // file exists only with swap accounting, and without it there
                // is nothing to cap.
                self.write_optional(
                    "memory.memsw.limit_in_bytes",
                    &limits.memory_bytes.to_string(),
                );
                Ok(())
            }
            ("memory", Version::V2) => {
                write_value(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                // v2 counts swap on its own: zero keeps the worker to
                // `memory.max`, as `memsw` = limit does on v1.
                self.write_optional("memory.swap.max", "0");
                Ok(())
            }
            ("pids", _) => write_value(&dir.join("pids.max"), &limits.pids_max.to_string()),
            ("cpu", version) => {
                let quota = cpu_quota_us.ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("CPU quota {:?} is not a positive number", limits.cpu_quota),
                    )
                })?;
                match version {
                    Version::V1 => {
                        write_value(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                        write_value(&dir.join("cpu.cfs_quota_us"), &quota.to_string())
                    }
                    Version::V2 => {
                        write_value(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))
                    }
                }
            }
            _ => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unknown controller {controller}"),
            )),
        }
    }

    fn write_optional(&self, file: &str, value: &str) {
        let path = self.path.join(file);
        if path.exists()
            && let Err(error) = write_value(&path, value)
        {
            warn!(path = %path.display(), %error, "cgroup: cannot cap swap");
        }
    }
}

/// Removes leftover `<prefix><pid>` directories (and the worker directories
/// in them) of earlier supervisors whose pid no longer exists. Directories
/// that still hold processes are left alone. Returns how many root
/// directories were removed.
pub fn cleanup_stale(root_name_prefix: &str) -> usize {
    let mut removed = 0;
    for h in discover() {
        let Ok(entries) = fs::read_dir(&h.mount) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix(root_name_prefix))
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            if pid <= 0 || pid_alive(Pid::from_raw(pid)) {
                continue;
            }
            let root = entry.path();
            if let Ok(workers) = fs::read_dir(&root) {
                for worker in workers.flatten() {
                    if worker.file_type().is_ok_and(|t| t.is_dir()) {
                        let _ = fs::remove_dir(worker.path());
                    }
                }
            }
            match fs::remove_dir(&root) {
                Ok(()) => {
                    debug!(path = %root.display(), "removed a stale cgroup");
                    removed += 1;
                }
                Err(error) => {
                    warn!(path = %root.display(), %error, "cannot remove a stale cgroup");
                }
            }
        }
    }
    removed
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// A cgroup filesystem mount, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    point: PathBuf,
    version: Version,
    /// v1: the hierarchy's super options (`rw,memory`), which name its
    /// controllers. Empty for v2.
    options: Vec<String>,
}

/// A hierarchy that holds some of [`CONTROLLERS`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hierarchy {
    version: Version,
    mount: PathBuf,
    controllers: Vec<&'static str>,
}

impl Hierarchy {
    fn writable(&self) -> bool {
        let writable = |path: &Path| access(path, AccessFlags::W_OK).is_ok();
        match self.version {
            Version::V1 => writable(&self.mount),
            Version::V2 => {
                writable(&self.mount) && writable(&self.mount.join("cgroup.subtree_control"))
            }
        }
    }
}

/// The host's hierarchies for [`CONTROLLERS`]; empty when nothing is mounted
/// or mountinfo cannot be read.
fn discover() -> Vec<Hierarchy> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mounts = parse_mountinfo(&text);
    let v2 = mounts.iter().find(|m| m.version == Version::V2).map(|m| {
        let controllers = fs::read_to_string(m.point.join("cgroup.controllers"))
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        (m.point.clone(), controllers)
    });
    plan(
        &mounts,
        v2.as_ref().map(|(p, c)| (p.as_path(), c.as_slice())),
    )
}

/// Picks each controller's hierarchy: its v1 mount if it has one (a
/// controller bound to v1 is absent from v2), else the unified hierarchy when
/// it lists the controller. `v2` is the unified mount and its
/// `cgroup.controllers`.
fn plan(mounts: &[Mount], v2: Option<(&Path, &[String])>) -> Vec<Hierarchy> {
    let mut hierarchies: Vec<Hierarchy> = Vec::new();
    for controller in CONTROLLERS {
        let v1 = mounts
            .iter()
            .find(|m| m.version == Version::V1 && m.options.iter().any(|o| o == controller));
        let (version, mount) = match (v1, v2) {
            (Some(m), _) => (Version::V1, m.point.as_path()),
            (None, Some((point, listed))) if listed.iter().any(|c| c == controller) => {
                (Version::V2, point)
            }
            _ => continue,
        };
        match hierarchies.iter_mut().find(|h| h.mount == mount) {
            Some(h) => h.controllers.push(controller),
            None => hierarchies.push(Hierarchy {
                version,
                mount: mount.to_owned(),
                controllers: vec![controller],
            }),
        }
    }
    hierarchies
}

/// The cgroup mounts in a mountinfo table (proc(5)): `id parent dev root
/// point options [optional…] - fstype source superoptions`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let dash = fields.iter().skip(6).position(|&f| f == "-")? + 6;
            let version = match *fields.get(dash + 1)? {
                "cgroup" => Version::V1,
                "cgroup2" => Version::V2,
                _ => return None,
            };
            let options = match version {
                Version::V1 => fields
                    .get(dash + 3)?
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
                Version::V2 => Vec::new(),
            };
            Some(Mount {
                point: PathBuf::from(unescape_octal(fields.get(4)?)),
                version,
                options,
            })
        })
        .collect()
}

/// Undoes mountinfo's `\NNN` escapes of spaces, tabs, newlines and
/// backslashes in paths.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], code) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes to `<dir>/cgroup.subtree_control` the controllers it does not yet
/// hand down to its children.
fn enable_v2(dir: &Path, controllers: &[&str]) {
    let file = dir.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&file).unwrap_or_default();
    for controller in controllers {
        if enabled.split_whitespace().any(|c| c == *controller) {
            continue;
        }
        // One controller per write, so that one refusal does not block the
        // others.
        if let Err(error) = write_value(&file, &format!("+{controller}")) {
            warn!(path = %file.display(), controller, %error, "cgroup: cannot enable controller");
        }
    }
}

/// Creates `parent` (if needed) then `path` inside it, calling `prepare` on
/// `parent` in between. The parent is shared with concurrently stopping
/// workers whose `remove` may rmdir it once it looks empty, so a missing
/// parent at the second step is retried.
fn make_dirs(parent: &Path, path: &Path, prepare: impl Fn(&Path)) -> io::Result<()> {
    let mut last = None;
    for _ in 0..3 {
        match fs::create_dir(parent) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        prepare(parent);
        match fs::create_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)))
}

/// rmdir, retried for a few milliseconds while the kernel still counts
/// members that were just killed.
fn remove_dir_retrying(path: &Path) {
    for attempt in 1..=REMOVE_ATTEMPTS {
        match fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(e)
                if e.raw_os_error() == Some(Errno::EBUSY as i32) && attempt < REMOVE_ATTEMPTS =>
            {
                std::thread::sleep(REMOVE_PAUSE);
            }
            Err(error) => {
                warn!(path = %path.display(), %error, "cannot remove a worker cgroup");
                return;
            }
        }
    }
}

/// One `write(2)` of the whole value: cgroup files take a value per write.
fn write_value(path: &Path, value: &str) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// The value of a `key value` line of a cgroup statistics file
/// (`memory.events`, `memory.oom_control`).
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The CFS quota for `cpus` CPUs per [`CPU_PERIOD_US`]; `None` for a quota
/// that is not a positive number.
fn cfs_quota_us(cpus: f64) -> Option<u64> {
    if !cpus.is_finite() || cpus <= 0.0 {
        return None;
    }
    // Saturating float-to-int conversion; the kernel rejects absurd values.
    let quota = (cpus * CPU_PERIOD_US as f64).round() as u64;
    Some(quota.max(CPU_QUOTA_MIN_US))
}

fn check_name(name: &str) -> Result<(), CgroupError> {
    let bad = name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']);
    if bad {
        return Err(CgroupError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Whether a process with this pid exists (EPERM: it does, owned by someone
/// else).
fn pid_alive(pid: Pid) -> bool {
    !matches!(kill(pid, None), Err(Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::time::Instant;

    use super::*;

    const MIB: u64 = 1 << 20;

    const HOST_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_finds_cgroup_mounts() {
        let mounts = parse_mountinfo(HOST_MOUNTINFO);
        assert_eq!(mounts.len(), 6, "{mounts:?}");
        assert_eq!(mounts[0].point, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(mounts[0].options, ["rw", "cpu"]);
        assert_eq!(mounts[5].version, Version::V2);

        let shared = "30 25 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n\
                      36 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw shared:5 master:1 - cgroup cgroup rw,cpu,cpuacct\n\
                      37 25 0:32 / /mnt/with\\040space rw - cgroup cgroup rw,pids\n\
                      garbage\n";
        let mounts = parse_mountinfo(shared);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].point, Path::new("/sys/fs/cgroup"));
        assert_eq!(mounts[1].options, ["rw", "cpu", "cpuacct"]);
        assert_eq!(mounts[2].point, Path::new("/mnt/with space"));
    }

    #[test]
    fn v1_controllers_win_over_the_unified_mount() {
        let mounts = parse_mountinfo(HOST_MOUNTINFO);
        let hugetlb = ["hugetlb".to_owned()];
        let plan = plan(
            &mounts,
            Some((Path::new("/sys/fs/cgroup/unified"), &hugetlb)),
        );
        let got: Vec<_> = plan
            .iter()
            .map(|h| {
                (
                    h.version,
                    h.mount.to_str().unwrap_or(""),
                    h.controllers.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (Version::V1, "/sys/fs/cgroup/memory", vec!["memory"]),
                (Version::V1, "/sys/fs/cgroup/pids", vec!["pids"]),
                (Version::V1, "/sys/fs/cgroup/cpu", vec!["cpu"]),
            ]
        );
    }

    #[test]
    fn pure_v2_uses_one_directory_and_hybrids_mix() {
        let v2_only = parse_mountinfo("30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let listed: Vec<String> = ["cpuset", "cpu", "io", "memory", "pids"]
            .map(str::to_owned)
            .to_vec();
        let plan_v2 = plan(&v2_only, Some((Path::new("/sys/fs/cgroup"), &listed)));
        assert_eq!(plan_v2.len(), 1);
        assert_eq!(plan_v2[0].version, Version::V2);
        assert_eq!(plan_v2[0].controllers, ["memory", "pids", "cpu"]);

        // memory bound to v1, pids and cpu offered by v2.
        let hybrid = parse_mountinfo(
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
        );
        let listed: Vec<String> = ["cpu", "pids"].map(str::to_owned).to_vec();
        let plan_hybrid = plan(
            &hybrid,
            Some((Path::new("/sys/fs/cgroup/unified"), &listed)),
        );
        assert_eq!(plan_hybrid.len(), 2);
        assert_eq!(plan_hybrid[0].version, Version::V1);
        assert_eq!(plan_hybrid[1].version, Version::V2);
        assert_eq!(plan_hybrid[1].controllers, ["pids", "cpu"]);

        assert!(plan(&[], None).is_empty());
    }

    #[test]
    fn statistics_and_quotas_parse() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed_value(v1, "oom_kill"), Some(3));
        assert_eq!(keyed_value(v1, "oom_kill_disable"), Some(0));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(v2, "oom_kill"), Some(1));
        assert_eq!(keyed_value("oom 2\n", "oom_kill"), None);

        assert_eq!(cfs_quota_us(1.5), Some(150_000));
        assert_eq!(cfs_quota_us(0.5), Some(50_000));
        assert_eq!(cfs_quota_us(0.001), Some(CPU_QUOTA_MIN_US));
        assert_eq!(cfs_quota_us(0.0), None);
        assert_eq!(cfs_quota_us(-1.0), None);
        assert_eq!(cfs_quota_us(f64::NAN), None);
    }

    #[test]
    fn names_must_be_one_component() {
        for bad in ["", ".", "..", "a/b", "/abs", "nul\0"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("digits-1.0.0-3").is_ok());
        let limits = limits(64 * MIB, 16, None);
        assert!(WorkerCgroup::create("ward-1", "../escape", &limits).is_err());
    }

    // ---- Real cgroups: these need root. ----

    fn limits(memory_bytes: u64, pids_max: u64, cpu_quota: Option<f64>) -> CgroupLimits {
        CgroupLimits {
            memory_bytes,
            pids_max,
            cpu_quota,
        }
    }

    /// A root name of this test process that [`cleanup_stale`] with a
    /// `ward-` prefix never matches.
    fn test_root(tag: &str) -> String {
        format!("wardtest-{}-{tag}", std::process::id())
    }

    fn root_or_skip(test: &str) -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            eprintln!("skipping {test}: creating cgroups needs root");
        }
        root
    }

    fn create_or_skip(root: &str, worker: &str, limits: &CgroupLimits) -> Option<WorkerCgroup> {
        let support = available();
        if !(support.memory && support.pids) {
            eprintln!("skipping: no usable memory and pids controllers ({support:?})");
            return None;
        }
        let cgroup = WorkerCgroup::create(root, worker, limits).expect("valid names");
        assert!(
            !cgroup.missing.iter().any(|m| m == "memory" || m == "pids"),
            "{:?}",
            cgroup.missing
        );
        Some(cgroup)
    }

    /// `sh -c` that moves itself into the cgroup, then runs `script`.
    fn spawn_inside(cgroup: &WorkerCgroup, script: &str) -> Child {
        let moves: String = cgroup
            .procs_files()
            .iter()
            .map(|file| format!("echo $$ > '{}' || exit 97; ", file.display()))
            .collect();
        Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("{moves}{script}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn /bin/sh")
    }

    /// Waits for `child` to exit; after `limit`, kills it and fails.
    fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls `ready` until it holds or `limit` passes.
    fn poll_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + limit;
        while !ready() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    fn stderr_of(child: &mut Child) -> String {
        let mut text = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    }

    fn python() -> Option<PathBuf> {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        [venv, PathBuf::from("/usr/bin/python3")]
            .into_iter()
            .find(|p| p.exists())
    }

    #[test]
    fn limits_are_written_and_procs_files_exist() {
        if !root_or_skip("limits_are_written_and_procs_files_exist") {
            return;
        }
        let root = test_root("limits");
        let Some(cgroup) =
            create_or_skip(&root, "digits-1.0.0-3", &limits(64 * MIB, 16, Some(1.5)))
        else {
            return;
        };
        let support = available();
        if support.cpu {
            assert!(cgroup.missing.is_empty(), "{:?}", cgroup.missing);
        }
        let read = |controller: &str, v1: &str, v2: &str| -> String {
            let dir = cgroup
                .dirs
                .iter()
                .find(|d| d.controllers.contains(&controller))
                .expect("controller set up");
            let file = match dir.version {
                Version::V1 => v1,
                Version::V2 => v2,
            };
            fs::read_to_string(dir.path.join(file))
                .expect("read limit")
                .trim()
                .to_owned()
        };
        let memory = read("memory", "memory.limit_in_bytes", "memory.max");
        assert_eq!(memory, (64 * MIB).to_string());
        assert_eq!(read("pids", "pids.max", "pids.max"), "16");
        if support.cpu {
            let cpu = read("cpu", "cpu.cfs_quota_us", "cpu.max");
            assert!(cpu == "150000" || cpu == "150000 100000", "{cpu}");
        }
        for file in cgroup.procs_files() {
            assert!(file.exists(), "{}", file.display());
            assert!(
                file.to_string_lossy()
                    .contains(&format!("/{root}/digits-1.0.0-3/"))
            );
        }
        assert_eq!(cgroup.oom_kills(), Some(0));
    }

    #[test]
    fn a_bad_cpu_quota_is_missing_not_fatal() {
        if !root_or_skip("a_bad_cpu_quota_is_missing_not_fatal") {
            return;
        }
        let Some(cgroup) = create_or_skip(
            &test_root("badcpu"),
            "w",
            &limits(64 * MIB, 16, Some(f64::NAN)),
        ) else {
            return;
        };
        assert_eq!(cgroup.missing(), ["cpu"]);
        let Some(unlimited) = create_or_skip(&test_root("nocpu"), "w", &limits(64 * MIB, 16, None))
        else {
            return;
        };
        assert!(unlimited.missing().is_empty(), "{:?}", unlimited.missing());
        let uses_cpu = |c: &WorkerCgroup| c.dirs.iter().any(|d| d.controllers.contains(&"cpu"));
        assert!(!uses_cpu(&cgroup) && !uses_cpu(&unlimited));
    }

    #[test]
    fn memory_hog_is_oom_killed() {
        if !root_or_skip("memory_hog_is_oom_killed") {
            return;
        }
        let Some(python) = python() else {
            eprintln!("skipping memory_hog_is_oom_killed: no python3");
            return;
        };
        let Some(cgroup) = create_or_skip(&test_root("oom"), "hog", &limits(64 * MIB, 16, None))
        else {
            return;
        };
        let script = format!(
            "exec '{}' -c 'import time; x = bytearray(256 << 20); time.sleep(30)'",
            python.display()
        );
        let mut hog = spawn_inside(&cgroup, &script);
        let status = wait_bounded(&mut hog, Duration::from_secs(30));
        assert_eq!(
            status.signal(),
            Some(9),
            "{status:?}: {}",
            stderr_of(&mut hog)
        );
        assert!(cgroup.oom_kills() >= Some(1), "{:?}", cgroup.oom_kills());
        let peak = cgroup.memory_peak().expect("memory peak");
        assert!(peak > 16 * MIB && peak <= 64 * MIB, "peak {peak}");
    }

    #[test]
    fn fork_loop_hits_pids_max() {
        if !root_or_skip("fork_loop_hits_pids_max") {
            return;
        }
        let Some(cgroup) = create_or_skip(&test_root("pids"), "forker", &limits(64 * MIB, 8, None))
        else {
            return;
        };
        let mut shell = spawn_inside(
            &cgroup,
            // The sleeps must not hold the stderr pipe open.
            "i=0; while [ $i -lt 32 ]; do sleep 30 2>/dev/null & i=$((i + 1)); done; wait",
        );
        let status = wait_bounded(&mut shell, Duration::from_secs(20));
        let stderr = stderr_of(&mut shell);
        assert!(!status.success(), "{status:?}");
        assert!(
            stderr.contains("Cannot fork") || stderr.contains("Resource temporarily unavailable"),
            "{stderr}"
        );
        // The sleeps it did start are still inside: 7 of them at most.
        let members = cgroup.members().len();
        assert!((1..8).contains(&members), "{members} members");
        cgroup.kill_all();
        assert!(poll_until(Duration::from_secs(5), || cgroup
            .members()
            .is_empty()));
    }

    #[test]
    fn kill_all_kills_every_member_and_remove_cleans_up() {
        if !root_or_skip("kill_all_kills_every_member_and_remove_cleans_up") {
            return;
        }
        let root = test_root("kill");
        let Some(cgroup) = create_or_skip(&root, "family", &limits(64 * MIB, 16, Some(0.5))) else {
            return;
        };
        // Two children that escape the shell's process group, one that stays.
        let mut shell = spawn_inside(
            &cgroup,
            "setsid sleep 30 & (trap '' TERM; sleep 30) & exec sleep 30",
        );
        assert!(
            poll_until(Duration::from_secs(5), || cgroup.members().len() >= 3),
            "members: {:?}",
            cgroup.members()
        );
        let started = Instant::now();
        cgroup.kill_all();
        let status = wait_bounded(&mut shell, Duration::from_secs(5));
        assert_eq!(status.signal(), Some(9));
        assert!(poll_until(Duration::from_secs(5), || cgroup
            .members()
            .is_empty()));

        let dirs: Vec<PathBuf> = cgroup.dirs.iter().map(|d| d.path.clone()).collect();
        let parents: Vec<PathBuf> = cgroup.dirs.iter().map(|d| d.parent.clone()).collect();
        cgroup.remove();
        eprintln!("kill_all + remove took {:?}", started.elapsed());
        for dir in dirs.iter().chain(&parents) {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
        // Drop after remove is quiet and harmless.
        drop(cgroup);
    }

    #[test]
    fn drop_kills_and_removes() {
        if !root_or_skip("drop_kills_and_removes") {
            return;
        }
        let Some(cgroup) = create_or_skip(&test_root("drop"), "w", &limits(64 * MIB, 16, None))
        else {
            return;
        };
        let mut child = spawn_inside(&cgroup, "exec sleep 30");
        assert!(poll_until(Duration::from_secs(5), || cgroup
            .members()
            .len()
            == 1));
        let dirs: Vec<PathBuf> = cgroup.dirs.iter().map(|d| d.path.clone()).collect();
        drop(cgroup);
        assert_eq!(
            wait_bounded(&mut child, Duration::from_secs(5)).signal(),
            Some(9)
        );
        for dir in &dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
    }

    #[test]
    fn cleanup_stale_removes_only_dead_runs() {
        if !root_or_skip("cleanup_stale_removes_only_dead_runs") {
            return;
        }
        // A pid that existed and no longer does.
        let mut gone = Command::new("true").spawn().expect("spawn true");
        let dead_pid = gone.id();
        gone.wait().expect("wait true");
        let prefix = format!("wardstale{}-", std::process::id());
        let limits = limits(64 * MIB, 16, None);

        let Some(dead) = create_or_skip(&format!("{prefix}{dead_pid}"), "w", &limits) else {
            return;
        };
        let dead_dirs: Vec<PathBuf> = dead.dirs.iter().map(|d| d.parent.clone()).collect();
        std::mem::forget(dead); // as if that supervisor had been killed
        let live = WorkerCgroup::create(&format!("{prefix}{}", std::process::id()), "w", &limits)
            .expect("valid names");

        let removed = cleanup_stale(&prefix);
        assert_eq!(removed, dead_dirs.len());
        for dir in &dead_dirs {
            assert!(!dir.exists(), "{} left behind", dir.display());
        }
        for file in live.procs_files() {
            assert!(file.exists(), "{} removed", file.display());
        }
    }
}
