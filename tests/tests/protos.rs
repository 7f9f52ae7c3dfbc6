//! The Rust code for ward's gRPC services is generated from
//! `supervisor/proto/*.proto` and committed (`supervisor/src/grpc/generated`),
//! so that building ward needs no protoc and no code generator. This test
//! generates it again — with the protoc that PyPI's `grpcio-tools` carries
//! (the set-up installs it for the Python clients) and `tonic-prost-build` —
//! and fails when the committed files differ. `WARD_BLESS=1` rewrites them.

use std::path::{Path, PathBuf};
use std::process::Command;

use ward_tests::python;

const PROTOS: &[&str] = &["inference.proto", "health.proto", "airuntime.proto"];

/// Each package's file, as tonic-prost-build names it.
const GENERATED: &[&str] = &["inference.rs", "grpc.health.v1.rs", "ward.airuntime.v1.rs"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn generated_grpc_code_matches_the_protos() {
    let proto_dir = repo().join("supervisor/proto");
    let committed = repo().join("supervisor/src/grpc/generated");
    let out = tempfile::tempdir().unwrap();
    let set = out.path().join("descriptors.bin");
    let status = Command::new(python())
        .args([
            "-m",
            "grpc_tools.protoc",
            "--include_imports",
            "--include_source_info",
        ])
        .arg(format!("--descriptor_set_out={}", set.display()))
        .arg(format!("-I{}", proto_dir.display()))
        .args(PROTOS)
        .status()
        .expect("run grpc_tools.protoc (pip install grpcio-tools)");
    assert!(status.success(), "protoc failed on {}", proto_dir.display());
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .build_transport(false)
        .bytes(".")
        .emit_rerun_if_changed(false)
        .skip_protoc_run()
        .file_descriptor_set_path(&set)
        .out_dir(out.path())
        .compile_protos(PROTOS, &[proto_dir.to_str().unwrap()])
        .unwrap();
    let bless = std::env::var_os("WARD_BLESS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for name in GENERATED {
        let fresh = std::fs::read_to_string(out.path().join(name)).unwrap();
        let path = committed.join(name);
        let old = std::fs::read_to_string(&path).unwrap_or_default();
        if fresh != old {
            if bless {
                std::fs::write(&path, &fresh).unwrap();
            } else {
                stale.push(path.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "generated gRPC code is stale: {stale:?}; run WARD_BLESS=1 cargo nextest run -p ward-tests protos"
    );
}
