//! Deciding how a worker is confined, and describing the jail for the jailer.
//!
//! Trust is the operator's decision (`models.trusted`), never the plugin's:
//! an untrusted model's worker always runs under `ward-worker jail` (see the
//! worker's `jail` module for the layers). The supervisor prepares what the
//! jailer cannot do from inside: the cgroups, the empty directory the new root
//! is built on, and the list of runtime paths the worker needs to see.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ward_config::{ModelContract, WardConfig};
use ward_protocol::jail::{JailLimits, JailSpec};

/// Paths every jailed worker needs, read-only: found once at startup.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RuntimePaths {
    /// Bound read-only and executable.
    pub exec: Vec<PathBuf>,
    /// Bound read-only, not executable.
    pub data: Vec<PathBuf>,
    /// The host refuses the jail's namespaces (the startup probe; e.g. ward
    /// itself in an unprivileged container): jailed workers get only the
    /// layers that need no privilege.
    pub without_namespaces: bool,
}

/// The Python installation a plugin interpreter needs: its prefixes (a
/// virtualenv's and the base installation it points to).
fn python_prefixes(python: &Path) -> Vec<PathBuf> {
    let out = std::process::Command::new(python)
        .args(["-I", "-c", "import sys; print(sys.prefix); print(sys.base_prefix); print(sys.exec_prefix); print(sys.base_exec_prefix)"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| std::fs::canonicalize(l.trim()).unwrap_or_else(|_| PathBuf::from(l.trim())))
            .collect(),
        _ => {
            tracing::warn!(python = %python.display(), "cannot ask the plugin interpreter for its prefixes; Python plugins will not run sandboxed");
            Vec::new()
        }
    }
}

impl RuntimePaths {
    /// The system's library and binary directories, the worker binary, the
    /// ONNX Runtime library's directory and the Python installation.
    pub fn discover(worker: &Path, onnxruntime: Option<&Path>, python: &Path) -> RuntimePaths {
        let mut exec: BTreeSet<PathBuf> = ["/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect();
        exec.insert(std::fs::canonicalize(worker).unwrap_or_else(|_| worker.to_owned()));
        if let Some(dir) = onnxruntime
            .and_then(|lib| std::fs::canonicalize(lib).ok())
            .and_then(|l| l.parent().map(Path::to_owned))
        {
            exec.insert(dir);
        }
        // The interpreter as configured (it may be a symlink into a venv).
        if let Some(venv_python) = which(python) {
            exec.insert(venv_python.clone());
            if let Ok(real) = std::fs::canonicalize(&venv_python) {
                exec.insert(real);
            }
            exec.extend(python_prefixes(&venv_python));
        }
        // Drop paths already covered by a bound ancestor.
        let exec: Vec<PathBuf> = exec
            .iter()
            .filter(|p| !exec.iter().any(|q| q != *p && p.starts_with(q)))
            .cloned()
            .collect();
        let data = ["/etc/ld.so.cache", "/etc/localtime"]
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists())
            .collect();
        RuntimePaths {
            exec,
            data,
            without_namespaces: false,
        }
    }
}

/// Rewrites the worker's runtime paths (the ONNX Runtime library, the plugins'
/// Python) so that no directory on the way is a symbolic link. The jail binds
/// real directories, and inside it a path through a link to one leads
/// nowhere: a virtualenv under a symlink would make every model FAILED. The
/// last component stays as written for Python (a virtualenv's `python` is a
/// link to the system interpreter, and the venv is found from the path it is
/// run by). A path that cannot be resolved is kept, with a warning naming it.
/// This is also the one place `ORT_DYLIB_PATH` is read: a library named only
/// there is recorded in the config, which everything after start-up uses.
pub fn resolve_runtime_paths(cfg: &mut WardConfig) {
    let ort = cfg
        .worker
        .onnxruntime_library
        .clone()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty());
    if let Some(ort) = ort {
        let resolved = std::fs::canonicalize(&ort).unwrap_or_else(|e| {
            tracing::warn!(path = %ort.display(), error = %e, "cannot resolve the ONNX Runtime library");
            ort
        });
        cfg.worker.onnxruntime_library = Some(resolved);
    }
    let python = &cfg.worker.python;
    match which(python).map(|p| resolve_dirs(&p)) {
        Some(Ok(real)) => cfg.worker.python = real,
        Some(Err(e)) => {
            tracing::warn!(path = %python.display(), error = %e, "cannot resolve the plugins' Python")
        }
        None => tracing::warn!(path = %python.display(), "the plugins' Python is not found"),
    }
}

/// `path` with every directory on the way resolved, the last component kept.
pub fn resolve_dirs(path: &Path) -> std::io::Result<PathBuf> {
    let absolute = std::path::absolute(path)?;
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => Ok(std::fs::canonicalize(dir)?.join(name)),
        _ => Ok(absolute),
    }
}

/// Resolves a program name through PATH, like a shell.
fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return std::fs::canonicalize(program)
            .ok()
            .map(|_| std::path::absolute(program).unwrap_or_else(|_| program.to_owned()));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// Everything needed to write the jail spec of one worker generation.
pub struct JailPlan<'a> {
    pub cfg: &'a WardConfig,
    pub contract: &'a ModelContract,
    pub model_dir: &'a Path,
    pub worker: &'a Path,
    pub worker_args: Vec<String>,
    pub runtime: &'a RuntimePaths,
    pub cgroup_procs: Vec<PathBuf>,
    pub new_root: PathBuf,
    pub name: String,
    pub address_space_bytes: u64,
}

/// Variables the worker may see inside the jail (values from the supervisor's
/// own environment where present).
const ENV_PASS: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ"];

/// The whole environment of a confined worker (jail or container): the
/// allow-listed variables, and a home, scratch and Python settings of its own.
pub fn plugin_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ENV_PASS
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
        .collect();
    env.extend(
        [
            ("HOME", "/tmp"),
            ("TMPDIR", "/tmp"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONNOUSERSITE", "1"),
            ("OMP_NUM_THREADS", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    env
}

impl JailPlan<'_> {
    /// The spec, minus the socket path (filled in by the launcher).
    pub fn spec(&self) -> JailSpec {
        let s = &self.cfg.sandbox;
        let id = crate::sandbox::ids::plugin_id(
            s.uid_base,
            self.contract.model_id.as_str(),
            &self.contract.version.to_string(),
        );
        let env = plugin_env();
        let string = |p: &Path| p.to_string_lossy().into_owned();
        JailSpec {
            parent_pid: std::process::id(),
            socket: String::new(),
            worker: string(self.worker),
            worker_args: self.worker_args.clone(),
            cgroup_procs: self.cgroup_procs.iter().map(|p| string(p)).collect(),
            uid: id,
            gid: id,
            hostname: "plugin".to_owned(),
            new_root: string(&self.new_root),
            scratch_mb: s.scratch_mb,
            // The model directory is read-only but executable: plugins may
            // legitimately ship native code (compiled extensions, helpers).
            read_exec: self
                .runtime
                .exec
                .iter()
                .map(PathBuf::as_path)
                .chain(std::iter::once(self.model_dir))
                .map(string)
                .collect(),
            read_only: self.runtime.data.iter().map(|p| string(p)).collect(),
            limits: JailLimits {
                address_space_bytes: self.address_space_bytes,
                open_files: s.open_files,
                processes: s.pids_max,
                file_size_bytes: s.scratch_mb.saturating_mul(1 << 20).max(1 << 20),
                cpu_seconds: s.cpu_seconds,
            },
            env,
            strict: s.strict,
            namespaces: !self.runtime.without_namespaces,
        }
    }
}

/// Whether the operator trusts this model to run without a sandbox.
pub fn trusted(cfg: &WardConfig, model: &str) -> bool {
    cfg.is_trusted(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_resolved_and_the_last_component_kept() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(real.join("bin")).unwrap();
        std::fs::write(real.join("bin/python3"), "").unwrap();
        std::os::unix::fs::symlink(real.join("bin/python3"), real.join("bin/python")).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        let resolved = resolve_dirs(&dir.path().join("link/bin/python")).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        // Through the linked directory, but still the venv's `python`.
        assert_eq!(resolved, real.join("bin/python"));
        let mut cfg = WardConfig::default();
        cfg.worker.python = dir.path().join("link/bin/python");
        cfg.worker.onnxruntime_library = Some(dir.path().join("link/bin/python3"));
        resolve_runtime_paths(&mut cfg);
        assert_eq!(cfg.worker.python, real.join("bin/python"));
        assert_eq!(
            cfg.worker.onnxruntime_library,
            Some(real.join("bin/python3"))
        );
    }

    #[test]
    fn runtime_paths_cover_the_system_and_the_worker() {
        let worker = std::env::current_exe().unwrap();
        let paths = RuntimePaths::discover(&worker, None, Path::new("/nonexistent/python"));
        assert!(paths.exec.contains(&PathBuf::from("/usr")));
        assert!(
            paths.exec.iter().any(|p| worker.starts_with(p)),
            "{paths:?}"
        );
        // No path is listed under an ancestor already listed.
        for p in &paths.exec {
            assert!(
                !paths.exec.iter().any(|q| q != p && p.starts_with(q)),
                "{p:?} is redundant"
            );
        }
    }
}
