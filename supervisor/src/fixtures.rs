//! Test fixtures shared by the crate's unit tests: a real, validated
//! contract, made the way ward makes every contract (from a version
//! directory on disk).

use std::path::Path;

use ward_config::{HostInfo, ModelContract};

/// A validated contract of a Python plugin `model@version` (frame input,
/// a two-field output schema) with `extra` appended to its model.yaml —
/// resources, runtime, output tensors.
pub fn contract(model: &str, version: &str, extra: &str) -> ModelContract {
    let root = tempfile::tempdir().expect("a temp dir");
    let dir = root.path().join(model).join(version);
    std::fs::create_dir_all(&dir).expect("the version dir");
    std::fs::write(dir.join("inference.py"), "def predict(x):\n    return x\n")
        .expect("the plugin file");
    let yaml = format!(
        "model_id: {model}\nversion: \"{version}\"\nbackend: python\ninput:\n  type: frame\n  format: png\noutput:\n  schema:\n    label: {{type: string}}\n    score: {{type: float}}\n{extra}"
    );
    std::fs::write(dir.join("model.yaml"), yaml).expect("model.yaml");
    ward_config::validate_version_dir(Path::new(&dir), &HostInfo::default())
        .unwrap_or_else(|e| panic!("the fixture contract is invalid: {e:?}"))
}
