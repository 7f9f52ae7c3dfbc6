//! Arbitrary bytes as a plugin's model.yaml.
//!
//! The contract is validated against a fixed directory,
//! `$TMPDIR/ward-fuzz-model-yaml/digits/1.0.0`, which holds an empty
//! `weights/model.onnx`, so that a contract like the shipped digits model can
//! validate all the way to `Ok` and the fuzzer can explore past the
//! directory-name and weights checks.
//!
//! Invariants:
//! - validation never panics, whatever the text (alias bombs, deep nesting,
//!   odd scalars and keys are all bounded by the parser's budgets);
//! - a rejection always carries at least one problem;
//! - every problem has a non-empty message.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ward_config::{HostInfo, validate_contract};

fn model_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir()
            .join("ward-fuzz-model-yaml")
            .join("digits")
            .join("1.0.0");
        let weights = dir.join("weights");
        std::fs::create_dir_all(&weights).expect("create the fuzz model directory");
        std::fs::write(weights.join("model.onnx"), b"").expect("create the fuzz weights file");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let host = HostInfo::default();
    if let Err(invalid) = validate_contract(text, model_dir(), &host) {
        assert!(
            !invalid.problems.is_empty(),
            "validate_contract rejected the contract without naming a problem"
        );
        for problem in &invalid.problems {
            assert!(
                !problem.message.is_empty(),
                "a problem at {:?} ({:?}) has an empty message",
                problem.path,
                problem.kind
            );
        }
    }
});
