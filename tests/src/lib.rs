//! Where the real components live, for the integration tests and the
//! benchmarks alike: the repository, and the ONNX Runtime library and Python
//! interpreter that `./setup.sh` installs into `.venv`.

use std::path::{Path, PathBuf};

/// The repository root.
pub fn repo() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    here.canonicalize().unwrap_or(here)
}

/// The virtualenv's Python (or `WARD_PYTHON`).
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("WARD_PYTHON") {
        return PathBuf::from(p);
    }
    let p = repo().join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run ./setup.sh test (it creates the Python environment)",
        p.display()
    );
    p
}

/// ONNX Runtime's shared library from the onnxruntime wheel in the virtualenv
/// (or `ORT_DYLIB_PATH`).
pub fn onnxruntime() -> PathBuf {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return PathBuf::from(p);
    }
    let lib = repo().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dirs| {
        dirs.flatten().find_map(|d| {
            let capi = d.path().join("site-packages/onnxruntime/capi");
            std::fs::read_dir(capi)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libonnxruntime.so."))
                })
        })
    });
    found.unwrap_or_else(|| {
        panic!(
            "no libonnxruntime.so under {}: run ./setup.sh test",
            lib.display()
        )
    })
}

/// Triton's `perf_analyzer` and the directory of the libraries it loads
/// (`LD_LIBRARY_PATH`), as `./setup.sh test` installs them into
/// `.venv/perf_analyzer` (or `WARD_PERF_ANALYZER` and `WARD_PERF_ANALYZER_LIBS`).
pub fn perf_analyzer() -> (PathBuf, PathBuf) {
    let dir = repo().join(".venv/perf_analyzer");
    let binary = std::env::var_os("WARD_PERF_ANALYZER").map_or_else(
        || dir.join("tritonclient/tritonclient-2.48.0.data/data/bin/perf_analyzer"),
        PathBuf::from,
    );
    let libs = std::env::var_os("WARD_PERF_ANALYZER_LIBS").map_or_else(
        || dir.join("nvidia_cuda_runtime_cu12/nvidia/cuda_runtime/lib"),
        PathBuf::from,
    );
    assert!(
        binary.exists(),
        "{} is missing: run ./setup.sh test (it installs perf_analyzer)",
        binary.display()
    );
    (binary, libs)
}
