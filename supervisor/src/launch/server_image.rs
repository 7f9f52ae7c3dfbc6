//! The self-contained server image (`ward image build --server`): ward itself
//! in a container, with everything it runs inside the image — no bind mount
//! from the host at run time, nothing pulled (these hosts have no registry).
//!
//! Built `FROM scratch` from a build context this module writes itself (the
//! same ustar writer and engine call as the worker image):
//!
//! * `ward` and `ward-worker` in `/usr/local/bin` (without debug information
//!   when `strip` is installed);
//! * every shared library they, ONNX Runtime, Python and numpy's extension
//!   modules need, found with `ldd` and copied at the host's own paths
//!   (symbolic links such as a merged `/usr`'s `/lib -> usr/lib` recreated),
//!   so that the dynamic loader finds them where it always looks;
//! * the ONNX Runtime library in `/opt/ward/onnxruntime`;
//! * the plugins' Python: the base interpreter and its standard library at the
//!   host's prefix (no tests, no IDLE or Tk, no `site-packages`), and a
//!   virtualenv at `/opt/ward/venv` holding only [`PYTHON_PACKAGES`] (numpy),
//!   copied from the configured interpreter's `site-packages`;
//! * `/etc/ward/ward.yaml` ([`config_yaml`]): bind `0.0.0.0:8080` (HTTP) and
//!   `0.0.0.0:8081` (gRPC), models
//!   under `/models` (mounted read-only by the operator), run and log
//!   directories under `/tmp`, the in-image runtime paths, no Docker;
//! * `USER 65532`, `EXPOSE 8080 8081`, a `HEALTHCHECK` that runs `ward health`
//!   (the image has no shell and no curl), `ENTRYPOINT ward` with
//!   `CMD serve --config /etc/ward/ward.yaml`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::launch::container::{Engine, EngineError, TarKind, tar_entry};

/// The tag `ward image build --server` gives the image by default.
pub const DEFAULT_TAG: &str = "ward-server:local";
/// The port ward listens on inside the container.
pub const PORT: u16 = 8080;
/// The port of ward's gRPC services inside the container.
pub const GRPC_PORT: u16 = 8081;
/// The image's default user (and group): not root, no login.
pub const UID: u32 = 65532;
/// Label on the server image: what it is.
pub const LABEL_IMAGE: &str = "ward.image";

const BIN_DIR: &str = "/usr/local/bin";
const ORT_DIR: &str = "/opt/ward/onnxruntime";
const VENV: &str = "/opt/ward/venv";
pub const CONFIG_PATH: &str = "/etc/ward/ward.yaml";
/// Where the operator mounts the model root.
pub const MODEL_ROOT: &str = "/models";

/// The Python packages the plugins' virtualenv carries (with their
/// `.libs` and `.dist-info` directories).
pub const PYTHON_PACKAGES: &[&str] = &["numpy"];

/// Standard-library directories left out: tests, GUIs, the installer's
/// bootstrap, build configuration (a static libpython), old tools.
const STDLIB_SKIP: &[&str] = &[
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "site-packages",
    "dist-packages",
];

/// What goes into the image, from the host.
#[derive(Debug, Clone)]
pub struct Sources {
    pub ward: PathBuf,
    pub worker: PathBuf,
    pub onnxruntime: PathBuf,
    /// The plugins' interpreter as configured (a virtualenv's `python`, say).
    pub python: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerImageError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot ask {} about its installation: {why}", .python.display())]
    Python { python: PathBuf, why: String },
    #[error("the package {name} is not installed for {}", .python.display())]
    Package { name: String, python: PathBuf },
    #[error("ldd {}: {why}", .path.display())]
    Ldd { path: PathBuf, why: String },
    #[error("{0}")]
    Tar(std::io::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServerImageError + '_ {
    move |source| ServerImageError::Read {
        path: path.to_owned(),
        source,
    }
}

/// One entry of the image's file system.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir {
        mode: u32,
    },
    /// A host file's content.
    File {
        source: PathBuf,
        mode: u32,
    },
    Data {
        data: Vec<u8>,
        mode: u32,
    },
    Symlink(PathBuf),
}

/// The image's root file system, by absolute path (parents sort first).
#[derive(Debug, Default)]
struct Rootfs {
    nodes: BTreeMap<PathBuf, Node>,
    /// Host directories copied whole, and where: libraries `ldd` finds
    /// inside them are already in.
    trees: Vec<PathBuf>,
    /// A directory of stripped copies of the binaries, removed on drop.
    scratch: Option<PathBuf>,
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `path` with `.` and `..` folded (no file-system access).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn exec_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 { 0o755 } else { 0o644 }
}

impl Rootfs {
    /// A copy of `binary` without its debug information when `strip` is
    /// installed (a debug build's binaries shrink several times), else
    /// `binary` itself.
    fn stripped(&mut self, binary: &Path, name: &str) -> PathBuf {
        let dir = self.scratch.get_or_insert_with(|| {
            std::env::temp_dir().join(format!("ward-server-image-{}", std::process::id()))
        });
        let out = dir.join(name);
        let done = std::fs::create_dir_all(&*dir).is_ok()
            && Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(&out)
                .arg(binary)
                .output()
                .is_ok_and(|o| o.status.success());
        if done { out } else { binary.to_owned() }
    }

    /// `dir` and every directory above it.
    fn dir(&mut self, dir: &Path) {
        for d in dir.ancestors() {
            if d == Path::new("/") || d.as_os_str().is_empty() {
                break;
            }
            self.nodes
                .entry(d.to_owned())
                .or_insert(Node::Dir { mode: 0o755 });
        }
    }

    fn put(&mut self, at: &Path, node: Node) {
        if let Some(parent) = at.parent() {
            self.dir(parent);
        }
        self.nodes.insert(at.to_owned(), node);
    }

    /// A host file at `at` in the image.
    fn file(&mut self, host: &Path, at: &Path) -> Result<(), ServerImageError> {
        let meta = std::fs::metadata(host).map_err(read_err(host))?;
        use std::os::unix::fs::PermissionsExt;
        self.put(
            at,
            Node::File {
                source: host.to_owned(),
                mode: exec_mode(meta.permissions().mode()),
            },
        );
        Ok(())
    }

    /// A host path at the same path in the image, every symbolic link on
    /// the way (a merged `/usr`'s `/lib`, a library's soname link) kept as a
    /// link and its target added too.
    fn host_path(&mut self, path: &Path) -> Result<(), ServerImageError> {
        self.host_path_depth(&normalize(path), 0)
    }

    fn host_path_depth(&mut self, path: &Path, depth: u32) -> Result<(), ServerImageError> {
        if depth > 16 {
            return Err(ServerImageError::Read {
                path: path.to_owned(),
                source: std::io::Error::other("too many levels of symbolic links"),
            });
        }
        let mut cur = PathBuf::from("/");
        let parts: Vec<_> = path.components().skip(1).collect();
        for (i, part) in parts.iter().enumerate() {
            let next = cur.join(part);
            let meta = std::fs::symlink_metadata(&next).map_err(read_err(&next))?;
            let last = i + 1 == parts.len();
            if meta.file_type().is_symlink() {
                let link = std::fs::read_link(&next).map_err(read_err(&next))?;
                let target = normalize(&cur.join(&link));
                self.put(&next, Node::Symlink(link));
                self.host_path_depth(&target, depth + 1)?;
                if last {
                    return Ok(());
                }
                cur = std::fs::canonicalize(&next).map_err(read_err(&next))?;
            } else if meta.is_dir() {
                self.dir(&next);
                cur = next;
            } else if last {
                self.file(&next, &next)?;
            } else {
                return Err(ServerImageError::Read {
                    path: next,
                    source: std::io::Error::other("not a directory"),
                });
            }
        }
        Ok(())
    }

    /// A host directory, recursively, at `at`; `skip` leaves out entries by
    /// name (directories with all below them).
    fn tree(
        &mut self,
        host: &Path,
        at: &Path,
        skip: &dyn Fn(&str, bool) -> bool,
    ) -> Result<(), ServerImageError> {
        self.trees
            .push(std::fs::canonicalize(host).map_err(read_err(host))?);
        self.walk(host, at, skip)
    }

    fn walk(
        &mut self,
        host: &Path,
        at: &Path,
        skip: &dyn Fn(&str, bool) -> bool,
    ) -> Result<(), ServerImageError> {
        self.dir(at);
        let mut entries: Vec<_> = std::fs::read_dir(host)
            .map_err(read_err(host))?
            .flatten()
            .collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let from = e.path();
            let to = at.join(name);
            let ft = e.file_type().map_err(read_err(&from))?;
            if skip(name, ft.is_dir()) {
                continue;
            }
            if ft.is_symlink() {
                let link = std::fs::read_link(&from).map_err(read_err(&from))?;
                self.put(&to, Node::Symlink(link));
            } else if ft.is_dir() {
                self.walk(&from, &to, skip)?;
            } else if ft.is_file() {
                self.file(&from, &to)?;
            }
        }
        Ok(())
    }

    /// Whether `path` (canonical) is inside a directory copied whole.
    fn in_tree(&self, path: &Path) -> bool {
        self.trees.iter().any(|t| path.starts_with(t))
    }

    /// The host files of every ELF object in the image.
    fn elf_sources(&self) -> Vec<PathBuf> {
        self.nodes
            .values()
            .filter_map(|n| match n {
                Node::File { source, .. } if is_elf(source) => Some(source.clone()),
                _ => None,
            })
            .collect()
    }

    /// Adds every shared library the ELF objects in the image need (and the
    /// dynamic loader), at their host paths. `required` objects must have
    /// every library; for the others (Python extension modules for libraries
    /// the host lacks, such as Tk) a missing one is logged and skipped.
    fn add_libraries(&mut self, required: &[PathBuf]) -> Result<(), ServerImageError> {
        let mut seen = std::collections::BTreeSet::new();
        let mut queue = self.elf_sources();
        while let Some(object) = queue.pop() {
            let object = std::fs::canonicalize(&object).unwrap_or(object);
            if !seen.insert(object.clone()) {
                continue;
            }
            let libs = match ldd(&object) {
                Ok(libs) => libs,
                Err(why) if required.contains(&object) => {
                    return Err(ServerImageError::Ldd { path: object, why });
                }
                Err(why) => {
                    tracing::warn!(object = %object.display(), %why, "left a library out of the image");
                    continue;
                }
            };
            for lib in libs {
                let real = std::fs::canonicalize(&lib).map_err(read_err(&lib))?;
                if self.in_tree(&real) {
                    continue;
                }
                self.host_path(&lib)?;
                queue.push(real);
            }
        }
        Ok(())
    }

    /// The build context: the Dockerfile, `ward.yaml` and the root file
    /// system under `rootfs/`.
    fn context(&self, dockerfile: &str) -> Result<Vec<u8>, ServerImageError> {
        let mut tar = Vec::new();
        let t = ServerImageError::Tar;
        tar_entry(
            &mut tar,
            "Dockerfile",
            0o644,
            TarKind::File(dockerfile.as_bytes()),
        )
        .map_err(t)?;
        tar_entry(&mut tar, "rootfs", 0o755, TarKind::Dir).map_err(ServerImageError::Tar)?;
        for (path, node) in &self.nodes {
            let name = format!("rootfs{}", path.display());
            let entry = match node {
                Node::Dir { mode } => tar_entry(&mut tar, &name, *mode, TarKind::Dir),
                Node::Symlink(link) => tar_entry(
                    &mut tar,
                    &name,
                    0o777,
                    TarKind::Symlink(&link.to_string_lossy()),
                ),
                Node::Data { data, mode } => tar_entry(&mut tar, &name, *mode, TarKind::File(data)),
                Node::File { source, mode } => {
                    let data = std::fs::read(source).map_err(read_err(source))?;
                    tar_entry(&mut tar, &name, *mode, TarKind::File(&data))
                }
            };
            entry.map_err(ServerImageError::Tar)?;
        }
        tar.extend_from_slice(&[0; 1024]);
        Ok(tar)
    }
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The libraries `ldd` lists for `object`, the loader included: absolute
/// host paths. Err names the ones not found.
fn ldd(object: &Path) -> Result<Vec<PathBuf>, String> {
    let out = Command::new("ldd")
        .arg(object)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": nothing to add.
        if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
            || text.contains("statically linked")
        {
            return Ok(Vec::new());
        }
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    parse_ldd(&text)
}

/// `name => /path (0x...)` and `/lib64/ld-linux-x86-64.so.2 (0x...)` lines;
/// `name => not found` is an error, the vDSO has no file.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    let mut missing = Vec::new();
    for line in text.lines().map(str::trim) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    missing.push(name.trim().to_owned());
                    continue;
                }
                rest.split_whitespace().next().unwrap_or("")
            }
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    if missing.is_empty() {
        Ok(libs)
    } else {
        Err(format!("not found: {}", missing.join(", ")))
    }
}

/// What the configured interpreter says about its installation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PythonInstall {
    /// The real interpreter binary.
    executable: PathBuf,
    /// `major.minor`.
    version: String,
    full_version: String,
    /// The standard library (with `lib-dynload`).
    stdlib: PathBuf,
    /// Where the configured interpreter's packages are.
    site_packages: PathBuf,
}

fn ask_python(python: &Path) -> Result<PythonInstall, ServerImageError> {
    let script = "import os, sys, sysconfig\n\
        print(os.path.realpath(sys.executable))\n\
        print('%d.%d' % sys.version_info[:2])\n\
        print(sys.version.split()[0])\n\
        print(sysconfig.get_path('stdlib'))\n\
        print(sysconfig.get_path('platlib'))\n";
    let failed = |why: String| ServerImageError::Python {
        python: python.to_owned(),
        why,
    };
    let out = Command::new(python)
        .args(["-I", "-c", script])
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(String::from_utf8_lossy(&out.stderr).into_owned()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let [executable, version, full_version, stdlib, site_packages] = lines[..] else {
        return Err(failed(format!("unexpected answer: {text}")));
    };
    Ok(PythonInstall {
        executable: PathBuf::from(executable),
        version: version.to_owned(),
        full_version: full_version.to_owned(),
        stdlib: PathBuf::from(stdlib),
        site_packages: PathBuf::from(site_packages),
    })
}

/// The image's `ward.yaml`.
pub fn config_yaml(onnxruntime_file: &str) -> String {
    format!(
        "# ward in its server image (`ward image build --server`). Mount the model\n\
         # root read-only at {MODEL_ROOT}; override any field with WARD_* variables.\n\
         model_root: {MODEL_ROOT}\n\
         run_dir: /tmp/ward/run\n\
         log_dir: /tmp/ward/logs\n\
         server:\n  bind: 0.0.0.0:{PORT}\n  grpc_bind: 0.0.0.0:{GRPC_PORT}\n\
         runtime:\n  docker_enabled: false\n\
         worker:\n  binary: {BIN_DIR}/ward-worker\n  python: {VENV}/bin/python\n  \
         onnxruntime_library: {ORT_DIR}/{onnxruntime_file}\n"
    )
}

fn dockerfile() -> String {
    format!(
        "FROM scratch\n\
         COPY rootfs/ /\n\
         ENV PATH={BIN_DIR}:/usr/bin:/bin HOME=/tmp LANG=C.UTF-8\n\
         USER {UID}:{UID}\n\
         WORKDIR /tmp\n\
         EXPOSE {PORT} {GRPC_PORT}\n\
         HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
         CMD [\"{BIN_DIR}/ward\", \"health\", \"--url\", \"http://127.0.0.1:{PORT}\"]\n\
         ENTRYPOINT [\"{BIN_DIR}/ward\"]\n\
         CMD [\"serve\", \"--config\", \"{CONFIG_PATH}\"]\n"
    )
}

/// The server image's root file system.
fn rootfs(src: &Sources) -> Result<Rootfs, ServerImageError> {
    let mut fs = Rootfs::default();
    let ward = fs.stripped(&src.ward, "ward");
    let worker = fs.stripped(&src.worker, "ward-worker");
    fs.file(&ward, &Path::new(BIN_DIR).join("ward"))?;
    fs.file(&worker, &Path::new(BIN_DIR).join("ward-worker"))?;
    let ort = std::fs::canonicalize(&src.onnxruntime).map_err(read_err(&src.onnxruntime))?;
    let ort_name = ort
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    fs.file(&ort, &Path::new(ORT_DIR).join(&ort_name))?;

    // The plugins' Python: the base installation at its own prefix, numpy
    // in a virtualenv of its own.
    let py = ask_python(&src.python)?;
    fs.host_path(&py.executable)?;
    let skip_stdlib = |name: &str, dir: bool| {
        if dir {
            STDLIB_SKIP.contains(&name) || name.starts_with("config-")
        } else {
            name.ends_with(".opt-1.pyc") || name.ends_with(".opt-2.pyc")
        }
    };
    // At its real path: nothing may sit under a symbolic link in the image.
    let stdlib = std::fs::canonicalize(&py.stdlib).map_err(read_err(&py.stdlib))?;
    fs.tree(&stdlib, &stdlib, &skip_stdlib)?;
    let venv = Path::new(VENV);
    fs.put(
        &venv.join("bin/python"),
        Node::Symlink(py.executable.clone()),
    );
    fs.put(
        &venv.join(format!("bin/python{}", py.version)),
        Node::Symlink(PathBuf::from("python")),
    );
    let home = py.executable.parent().unwrap_or(Path::new("/usr/bin"));
    fs.put(
        &venv.join("pyvenv.cfg"),
        Node::Data {
            data: format!(
                "home = {}\ninclude-system-site-packages = false\nversion = {}\n",
                home.display(),
                py.full_version
            )
            .into_bytes(),
            mode: 0o644,
        },
    );
    let site = venv.join(format!("lib/python{}/site-packages", py.version));
    fs.dir(&site);
    let skip_tests = |name: &str, dir: bool| dir && (name == "tests" || name == "__pycache__");
    for package in PYTHON_PACKAGES {
        let dir = py.site_packages.join(package);
        if !dir.is_dir() {
            return Err(ServerImageError::Package {
                name: (*package).to_owned(),
                python: src.python.clone(),
            });
        }
        fs.tree(&dir, &site.join(package), &skip_tests)?;
        let libs = py.site_packages.join(format!("{package}.libs"));
        if libs.is_dir() {
            fs.tree(&libs, &site.join(format!("{package}.libs")), &skip_tests)?;
        }
        let entries = std::fs::read_dir(&py.site_packages).map_err(read_err(&py.site_packages))?;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&format!("{package}-")) && name.ends_with(".dist-info") {
                fs.tree(&e.path(), &site.join(&name), &skip_tests)?;
            }
        }
    }

    let required = [
        std::fs::canonicalize(&ward).map_err(read_err(&ward))?,
        std::fs::canonicalize(&worker).map_err(read_err(&worker))?,
        ort,
        py.executable.clone(),
    ];
    fs.add_libraries(&required)?;

    fs.put(
        Path::new(CONFIG_PATH),
        Node::Data {
            data: config_yaml(&ort_name).into_bytes(),
            mode: 0o644,
        },
    );
    // Scratch for ward's run and log directories (and anything else).
    fs.put(Path::new("/tmp"), Node::Dir { mode: 0o1777 });
    Ok(fs)
}

/// The build context of the server image (blocking: reads every file and
/// runs `ldd`).
pub fn build_context(src: &Sources) -> Result<Vec<u8>, ServerImageError> {
    rootfs(src)?.context(&dockerfile())
}

/// Builds the server image `tag` on `engine`; returns the context's size.
pub async fn build(engine: &Engine, src: Sources, tag: &str) -> Result<usize, ServerImageError> {
    let context = tokio::task::spawn_blocking(move || build_context(&src))
        .await
        .map_err(|e| ServerImageError::Tar(std::io::Error::other(e)))??;
    let size = context.len();
    let labels = HashMap::from([(LABEL_IMAGE.to_owned(), "server".to_owned())]);
    engine.build(tag, context, labels).await?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed_with_the_loader_and_without_the_vdso() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libm.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        let missing = "\tlibtk8.6.so => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        assert!(parse_ldd(missing).unwrap_err().contains("libtk8.6.so"));
    }

    #[test]
    fn the_image_config_is_a_valid_ward_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.yaml");
        std::fs::write(&path, config_yaml("libonnxruntime.so.1.2.3")).unwrap();
        let cfg = ward_config::WardConfig::resolve(
            Some(path.as_path()),
            std::iter::empty::<(String, String)>(),
            &ward_config::ward::Flags::default(),
        )
        .unwrap()
        .config;
        assert_eq!(cfg.model_root, PathBuf::from(MODEL_ROOT));
        assert_eq!(cfg.server.bind.to_string(), format!("0.0.0.0:{PORT}"));
        assert!(!cfg.runtime.docker_enabled);
        assert_eq!(
            cfg.worker.onnxruntime_library,
            Some(PathBuf::from(
                "/opt/ward/onnxruntime/libonnxruntime.so.1.2.3"
            ))
        );
        assert!(cfg.run_dir.starts_with("/tmp") && cfg.log_dir.starts_with("/tmp"));
    }

    #[test]
    fn host_paths_keep_their_links_and_long_names_fit_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("usr/lib");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::write(real.join("libx.so.1.2"), b"lib").unwrap();
        std::os::unix::fs::symlink("libx.so.1.2", real.join("libx.so.1")).unwrap();
        std::os::unix::fs::symlink("usr/lib", dir.path().join("lib")).unwrap();
        let mut fs = Rootfs::default();
        fs.host_path(&dir.path().join("lib/libx.so.1")).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        assert_eq!(
            fs.nodes.get(&dir.path().join("lib")),
            Some(&Node::Symlink(PathBuf::from("usr/lib")))
        );
        assert_eq!(
            fs.nodes.get(&real.join("libx.so.1")),
            Some(&Node::Symlink(PathBuf::from("libx.so.1.2")))
        );
        assert!(matches!(
            fs.nodes.get(&real.join("libx.so.1.2")),
            Some(Node::File { .. })
        ));
        let long = format!("/opt/{}/{}/file.py", "d".repeat(60), "e".repeat(60));
        fs.put(
            Path::new(&long),
            Node::Data {
                data: b"x".to_vec(),
                mode: 0o644,
            },
        );
        let tar = fs.context("FROM scratch\n").unwrap();
        let archive = dir.path().join("c.tar");
        std::fs::write(&archive, tar).unwrap();
        let out_dir = dir.path().join("out");
        std::fs::create_dir_all(&out_dir).unwrap();
        let out = Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&out_dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::read(out_dir.join(format!("rootfs{long}"))).unwrap(),
            b"x"
        );
        let link = out_dir.join(format!("rootfs{}", dir.path().join("lib").display()));
        assert_eq!(std::fs::read_link(link).unwrap(), PathBuf::from("usr/lib"));
    }
}
