//! `ward validate` as an operator runs it: the real binary on real directories.

use std::process::{Command, Output};
use ward_tests::repo;

fn ward(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_it-ward"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run ward")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn bundled_models_are_all_ok() {
    let out = ward(&["validate", "models"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for name in ["cnn/1.0.0", "digits/1.0.0", "digits/1.1.0"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"));
        assert!(line.ends_with("OK"), "{line}");
    }
}

#[test]
fn one_version_directory_can_be_validated() {
    let out = ward(&["validate", "models/digits/1.1.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("models/digits/1.1.0  OK"));
}

#[test]
fn broken_models_name_every_problem_and_exit_1() {
    let out = ward(&["validate", "tests/fixtures/broken_root"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let expected = [
        ("typos/1.0.0", "INVALID (4 problems)"),
        ("typos/1.0.0", "input.type: unknown value \"vidoe\""),
        (
            "typos/1.0.0",
            "output.schema.confidence.type: unknown type \"flaot\"",
        ),
        ("typos/1.0.0", "timeout: unknown field"),
        (
            "typos/1.0.0",
            "entry_points.inference: \"../../escape.py\" must be a relative path inside the model directory",
        ),
        (
            "misversioned/2.0.0",
            "version: version \"2.1.0\" does not match its directory name \"2.0.0\"",
        ),
        ("empty/1.0.0", "model.yaml: model.yaml does not exist"),
        (
            "gpu_only/1.0.0",
            "hardware: the model does not support CPU and this host has no GPU",
        ),
    ];
    for (model, needle) in expected {
        assert!(
            text.contains(needle),
            "{model}: expected {needle:?} in:\n{text}"
        );
    }
    assert!(text.contains("0 of 4 model versions valid"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(ward(&["validate", "a", "b"]).status.code(), Some(2));
    assert_eq!(ward(&["frobnicate"]).status.code(), Some(2));
    assert_eq!(ward(&[]).status.code(), Some(2));
    assert_eq!(
        ward(&["validate", "/nonexistent/models"]).status.code(),
        Some(2)
    );
}
