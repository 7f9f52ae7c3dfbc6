//! Every rule of model.yaml validation has a failing fixture here, and each test
//! checks the field path and kind of the problem it reports.
#![allow(clippy::unwrap_used)] // Tests unwrap: a panic is the failure report.

use std::fs;
use std::path::{Path, PathBuf};

use ward_config::model::GpuInfo;
use ward_config::{
    Backend, FieldType, HostInfo, InputKind, Layout, Mode, ProblemKind, validate_version_dir,
};

const GOOD_ONNX: &str = r#"
model_id: digits
version: "1.0.0"
display_name: Digits
backend: onnx
input:
  type: batch
  tensors:
    - {name: input, datatype: FP32, shape: [-1, 64]}
output:
  schema:
    label: {type: integer, min: 0, max: 9}
    probabilities: {type: array, items: {type: float, min: 0.0, max: 1.0}}
  tensors:
    - {name: label, datatype: INT64, shape: [-1]}
    - {name: probabilities, datatype: FP32, shape: [-1, 10]}
"#;

const GOOD_PYTHON: &str = r#"
model_id: echo
version: "0.1.0"
input: {type: batch}
output:
  schema:
    event_type: {type: string, enum: [a, b]}
    confidence: {type: float, min: 0.0, max: 1.0}
"#;

/// A scratch model root holding one version directory.
struct Fixture {
    _root: tempfile::TempDir,
    dir: PathBuf,
}

impl Fixture {
    fn new(model: &str, version: &str) -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(model).join(version);
        fs::create_dir_all(&dir).unwrap();
        Fixture { _root: root, dir }
    }

    fn onnx(yaml: &str) -> Fixture {
        let f = Fixture::new("digits", "1.0.0");
        f.file("weights/model.onnx", "not parsed by validation");
        f.file("model.yaml", yaml);
        f
    }

    fn python(yaml: &str) -> Fixture {
        let f = Fixture::new("echo", "0.1.0");
        f.file(
            "inference.py",
            "def infer(inputs, context):\n    return {}\n",
        );
        f.file("model.yaml", yaml);
        f
    }

    fn file(&self, rel: &str, text: &str) {
        let path = self.dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn problems(&self, host: &HostInfo) -> Vec<(String, ProblemKind)> {
        match validate_version_dir(&self.dir, host) {
            Ok(c) => panic!("expected problems, got a valid contract: {c:?}"),
            Err(invalid) => invalid
                .problems
                .into_iter()
                .map(|p| (p.path, p.kind))
                .collect(),
        }
    }
}

fn cpu_host() -> HostInfo {
    HostInfo::default()
}

/// Asserts that `yaml` (an edit of a good contract) reports exactly `path`/`kind`.
#[track_caller]
fn expect_one(f: &Fixture, path: &str, kind: ProblemKind) {
    let problems = f.problems(&cpu_host());
    assert_eq!(
        problems,
        vec![(path.to_owned(), kind)],
        "unexpected problem list"
    );
}

fn edit(base: &str, from: &str, to: &str) -> String {
    assert!(base.contains(from), "fixture edit {from:?} does not apply");
    base.replacen(from, to, 1)
}

#[test]
fn good_contracts_validate() {
    let f = Fixture::onnx(GOOD_ONNX);
    let c = validate_version_dir(&f.dir, &cpu_host()).unwrap();
    assert_eq!(c.model_id.as_str(), "digits");
    assert_eq!(c.version, semver::Version::new(1, 0, 0));
    assert_eq!(c.backend, Backend::Onnx);
    assert_eq!(c.input.kind, InputKind::Batch);
    assert_eq!(c.input.tensors[0].shape, vec![-1, 64]);
    assert_eq!(c.output.tensors.len(), 2);
    assert!(matches!(
        c.output.schema["label"].ty,
        FieldType::Integer {
            min: Some(0),
            max: Some(9)
        }
    ));
    assert_eq!(c.runtime.modes, vec![Mode::Native, Mode::Container]);
    assert!(c.hardware.supports_cpu);

    let f = Fixture::python(GOOD_PYTHON);
    let c = validate_version_dir(&f.dir, &cpu_host()).unwrap();
    assert_eq!(c.backend, Backend::Python, "inferred from inference.py");
    assert_eq!(c.entry_points.inference, PathBuf::from("inference.py"));
}

#[test]
fn frame_contracts_validate_with_their_preprocessing() {
    let yaml = r#"
model_id: digits
version: "1.0.0"
input:
  type: frame
  format: png
  min_width: 8
  min_height: 8
  channels: 1
  preprocessing:
    resize: {width: 8, height: 8}
    invert: true
    scale: 0.0627451
  tensors:
    - {name: input, datatype: FP32, shape: [-1, 64]}
output:
  schema:
    label: {type: string}
    confidence: {type: float, min: 0.0, max: 1.0}
  tensors:
    - {name: probabilities, datatype: FP32, shape: [-1, 10]}
  classifier: {tensor: probabilities, top_k: 3, labels: labels.txt}
"#;
    let f = Fixture::onnx(yaml);
    f.file("labels.txt", "zero\none\n");
    assert_eq!(
        f.problems(&cpu_host()),
        vec![("output.schema.candidates".to_owned(), ProblemKind::Missing)],
        "top_k > 1 fills `candidates`, which the schema must declare"
    );
    f.file(
        "model.yaml",
        &yaml.replace(
            "    confidence: {type: float, min: 0.0, max: 1.0}\n",
            "    confidence: {type: float, min: 0.0, max: 1.0}\n    candidates: {type: array, items: {type: object, properties: {label: {type: string}, confidence: {type: float}}}}\n",
        ),
    );
    let c = validate_version_dir(&f.dir, &cpu_host()).unwrap();
    let frame = c.input.frame.unwrap();
    assert_eq!(frame.channels, 1);
    assert_eq!(frame.preprocessing.resize, Some((8, 8)));
    assert_eq!(frame.preprocessing.layout, Layout::Nchw);
    assert_eq!(frame.preprocessing.std, vec![1.0]);
    assert_eq!(c.output.classifier.unwrap().top_k, 3);
}

// --- spec 003 §3.4: model.yaml exists ---------------------------------------

#[test]
fn missing_contract_file() {
    let f = Fixture::new("digits", "1.0.0");
    expect_one(&f, "model.yaml", ProblemKind::FileMissing);
}

// --- model.yaml is valid YAML -------------------------------------------------

#[test]
fn invalid_yaml() {
    expect_one(
        &Fixture::onnx("model_id: [digits\n"),
        "model.yaml",
        ProblemKind::Syntax,
    );
}

#[test]
fn not_a_mapping() {
    expect_one(&Fixture::onnx("- digits\n"), "", ProblemKind::WrongType);
}

#[test]
fn alias_bomb_is_a_syntax_problem() {
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        yaml.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    expect_one(&Fixture::onnx(&yaml), "model.yaml", ProblemKind::Syntax);
}

// --- required fields present --------------------------------------------------

#[test]
fn missing_model_id() {
    let f = Fixture::onnx(&edit(GOOD_ONNX, "model_id: digits\n", ""));
    expect_one(&f, "model_id", ProblemKind::Missing);
}

#[test]
fn missing_version() {
    let f = Fixture::onnx(&edit(GOOD_ONNX, "version: \"1.0.0\"\n", ""));
    expect_one(&f, "version", ProblemKind::Missing);
}

#[test]
fn missing_input_type() {
    let f = Fixture::onnx(&edit(GOOD_ONNX, "  type: batch\n", ""));
    expect_one(&f, "input.type", ProblemKind::Missing);
}

#[test]
fn missing_output_schema() {
    let yaml = edit(
        GOOD_ONNX,
        "  schema:\n    label: {type: integer, min: 0, max: 9}\n    probabilities: {type: array, items: {type: float, min: 0.0, max: 1.0}}\n",
        "",
    );
    expect_one(&Fixture::onnx(&yaml), "output.schema", ProblemKind::Missing);
}

// --- version is semver and matches its directory --------------------------------

#[test]
fn version_not_semver() {
    let f = Fixture::onnx(&edit(GOOD_ONNX, "version: \"1.0.0\"", "version: \"1.0\""));
    let problems = f.problems(&cpu_host());
    assert_eq!(
        problems,
        vec![("version".to_owned(), ProblemKind::InvalidValue)]
    );
}

#[test]
fn version_unquoted_number() {
    let f = Fixture::onnx(&edit(GOOD_ONNX, "version: \"1.0.0\"", "version: 1.0"));
    expect_one(&f, "version", ProblemKind::WrongType);
}

#[test]
fn version_differs_from_directory() {
    let f = Fixture::onnx(&edit(GOOD_ONNX, "version: \"1.0.0\"", "version: \"1.1.0\""));
    expect_one(&f, "version", ProblemKind::Mismatch);
}

#[test]
fn model_id_differs_from_directory() {
    let f = Fixture::onnx(&edit(GOOD_ONNX, "model_id: digits", "model_id: numbers"));
    expect_one(&f, "model_id", ProblemKind::Mismatch);
}

#[test]
fn model_id_with_bad_characters() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "model_id: digits",
        "model_id: \"dig its\"",
    ));
    expect_one(&f, "model_id", ProblemKind::InvalidValue);
}

// --- input type is recognised -----------------------------------------------------

#[test]
fn unknown_input_type() {
    let f = Fixture::onnx(&edit(GOOD_ONNX, "type: batch", "type: video"));
    expect_one(&f, "input.type", ProblemKind::InvalidValue);
}

#[test]
fn frame_fields_on_a_batch_model() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "  type: batch\n",
        "  type: batch\n  channels: 3\n",
    ));
    expect_one(&f, "input.channels", ProblemKind::InvalidValue);
}

// --- output schema is parseable ------------------------------------------------------

#[test]
fn unknown_schema_type() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "label: {type: integer",
        "label: {type: int",
    ));
    expect_one(&f, "output.schema.label.type", ProblemKind::InvalidValue);
}

#[test]
fn array_without_items() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "probabilities: {type: array, items: {type: float, min: 0.0, max: 1.0}}",
        "probabilities: {type: array}",
    ));
    expect_one(
        &f,
        "output.schema.probabilities.items",
        ProblemKind::Missing,
    );
}

#[test]
fn nested_schema_errors_have_deep_paths() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "probabilities: {type: array, items: {type: float, min: 0.0, max: 1.0}}",
        "boxes: {type: array, items: {type: object, properties: {x: {type: integer}, label: {type: str}}}}",
    ));
    expect_one(
        &f,
        "output.schema.boxes.items.properties.label.type",
        ProblemKind::InvalidValue,
    );
}

#[test]
fn float_bounds_reversed() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "{type: float, min: 0.0, max: 1.0}",
        "{type: float, min: 1.0, max: 0.0}",
    ));
    expect_one(
        &f,
        "output.schema.probabilities.items.max",
        ProblemKind::InvalidValue,
    );
}

// --- inference entry point exists ----------------------------------------------------

#[test]
fn python_entry_point_missing() {
    let f = Fixture::new("echo", "0.1.0");
    f.file(
        "model.yaml",
        &format!("{GOOD_PYTHON}backend: python\nentry_points: {{inference: main.py}}\n"),
    );
    expect_one(&f, "entry_points.inference", ProblemKind::FileMissing);
}

#[test]
fn declared_preprocess_missing() {
    let f = Fixture::python(&format!(
        "{GOOD_PYTHON}entry_points: {{preprocess: pre.py}}\n"
    ));
    expect_one(&f, "entry_points.preprocess", ProblemKind::FileMissing);
}

#[test]
fn onnx_weights_missing() {
    let f = Fixture::new("digits", "1.0.0");
    f.file("model.yaml", GOOD_ONNX);
    expect_one(&f, "weights", ProblemKind::FileMissing);
}

#[test]
fn backend_cannot_be_inferred() {
    let f = Fixture::new("echo", "0.1.0");
    f.file("model.yaml", GOOD_PYTHON);
    expect_one(&f, "backend", ProblemKind::Missing);
}

#[test]
fn entry_point_escaping_the_directory() {
    let f = Fixture::python(&format!(
        "{GOOD_PYTHON}entry_points: {{inference: ../../../etc/passwd}}\n"
    ));
    expect_one(&f, "entry_points.inference", ProblemKind::UnsafePath);
    let f = Fixture::python(&format!(
        "{GOOD_PYTHON}entry_points: {{inference: /etc/passwd}}\n"
    ));
    expect_one(&f, "entry_points.inference", ProblemKind::UnsafePath);
}

#[test]
fn weights_symlinked_outside_the_directory() {
    let f = Fixture::new("digits", "1.0.0");
    f.file("model.yaml", GOOD_ONNX);
    let outside = f.dir.parent().unwrap().join("secret.onnx");
    fs::write(&outside, "x").unwrap();
    fs::create_dir_all(f.dir.join("weights")).unwrap();
    std::os::unix::fs::symlink(&outside, f.dir.join("weights/model.onnx")).unwrap();
    expect_one(&f, "weights", ProblemKind::UnsafePath);
}

// --- hardware compatible with this host -------------------------------------------------

#[test]
fn gpu_only_model_on_a_cpu_host() {
    let f = Fixture::onnx(&format!(
        "{GOOD_ONNX}hardware: {{supports_cpu: false, supports_gpu: true}}\n"
    ));
    expect_one(&f, "hardware", ProblemKind::Incompatible);
}

#[test]
fn gpu_model_needing_more_memory_than_the_host_has() {
    let f = Fixture::onnx(&format!(
        "{GOOD_ONNX}hardware: {{supports_cpu: false, supports_gpu: true, min_gpu_memory_mb: 80000}}\n"
    ));
    let host = HostInfo {
        gpu: Some(GpuInfo {
            name: "T4".into(),
            memory_mb: Some(16_000),
        }),
        jetson: false,
    };
    assert_eq!(
        f.problems(&host),
        vec![("hardware".to_owned(), ProblemKind::Incompatible)]
    );
    let big = HostInfo {
        gpu: Some(GpuInfo {
            name: "H100".into(),
            memory_mb: Some(81_000),
        }),
        jetson: false,
    };
    validate_version_dir(&f.dir, &big).unwrap();
}

#[test]
fn model_supporting_no_hardware() {
    let f = Fixture::onnx(&format!("{GOOD_ONNX}hardware: {{supports_cpu: false}}\n"));
    expect_one(&f, "hardware", ProblemKind::InvalidValue);
}

// --- ward's additions: tensors, runtime, timeouts, resources, frames -------------------

#[test]
fn unknown_field_is_reported_with_its_path() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "  type: batch\n",
        "  type: batch\n  tensor: []\n",
    ));
    expect_one(&f, "input.tensor", ProblemKind::UnknownField);
}

#[test]
fn unknown_datatype() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "{name: input, datatype: FP32",
        "{name: input, datatype: float",
    ));
    expect_one(&f, "input.tensors[0].datatype", ProblemKind::InvalidValue);
}

#[test]
fn zero_dimension() {
    let f = Fixture::onnx(&edit(GOOD_ONNX, "shape: [-1, 64]", "shape: [-1, 0]"));
    expect_one(&f, "input.tensors[0].shape[1]", ProblemKind::InvalidValue);
}

#[test]
fn duplicate_tensor_name() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "{name: probabilities, datatype: FP32",
        "{name: label, datatype: FP32",
    ));
    expect_one(&f, "output.tensors[1].name", ProblemKind::InvalidValue);
}

#[test]
fn onnx_model_without_tensors() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "  tensors:\n    - {name: input, datatype: FP32, shape: [-1, 64]}\n",
        "",
    ));
    expect_one(&f, "input.tensors", ProblemKind::Missing);
}

#[test]
fn unknown_runtime_mode() {
    let f = Fixture::onnx(&format!("{GOOD_ONNX}runtime: {{modes: [vm]}}\n"));
    expect_one(&f, "runtime.modes[0]", ProblemKind::InvalidValue);
}

#[test]
fn preferred_mode_not_declared() {
    let f = Fixture::onnx(&format!(
        "{GOOD_ONNX}runtime: {{modes: [native], preferred: container}}\n"
    ));
    expect_one(&f, "runtime.preferred", ProblemKind::InvalidValue);
}

#[test]
fn zero_timeout() {
    let f = Fixture::onnx(&format!("{GOOD_ONNX}timeouts: {{inference_ms: 0}}\n"));
    expect_one(&f, "timeouts.inference_ms", ProblemKind::InvalidValue);
}

#[test]
fn health_check_overrides_are_read() {
    let f = Fixture::onnx(&format!(
        "{GOOD_ONNX}health_check: {{interval_ms: 200, retries: 2, start_period_ms: 0}}\n"
    ));
    let c = validate_version_dir(&f.dir, &cpu_host()).unwrap();
    assert_eq!(c.health_check.interval_ms, Some(200));
    assert_eq!(c.health_check.timeout_ms, None);
    assert_eq!(c.health_check.retries, Some(2));
    assert_eq!(c.health_check.start_period_ms, Some(0));
    let base = ward_config::ward::HealthCheckConfig::default();
    let eff = c.health_check.over(&base);
    assert_eq!(
        (eff.interval_ms, eff.timeout_ms, eff.retries),
        (200, 2_000, 2)
    );
}

#[test]
fn health_check_problems_each_name_their_field() {
    let f = Fixture::onnx(&format!(
        "{GOOD_ONNX}health_check: {{interval_ms: 0, timeout_ms: soon, retries: 0, every: 3}}\n"
    ));
    let mut problems = f.problems(&cpu_host());
    problems.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        problems,
        vec![
            ("health_check.every".to_owned(), ProblemKind::UnknownField),
            (
                "health_check.interval_ms".to_owned(),
                ProblemKind::InvalidValue
            ),
            ("health_check.retries".to_owned(), ProblemKind::InvalidValue),
            ("health_check.timeout_ms".to_owned(), ProblemKind::WrongType),
        ]
    );
}

#[test]
fn memory_as_text() {
    let f = Fixture::onnx(&format!("{GOOD_ONNX}resources: {{memory_mb: lots}}\n"));
    expect_one(&f, "resources.memory_mb", ProblemKind::WrongType);
}

#[test]
fn frame_with_two_channels() {
    let yaml = r#"
model_id: echo
version: "0.1.0"
input: {type: frame, channels: 2}
output: {schema: {label: {type: string}}}
"#;
    expect_one(
        &Fixture::python(yaml),
        "input.channels",
        ProblemKind::InvalidValue,
    );
}

#[test]
fn frame_tensor_not_fitting_the_resize() {
    let yaml = r#"
model_id: digits
version: "1.0.0"
input:
  type: frame
  channels: 1
  preprocessing: {resize: {width: 8, height: 8}}
  tensors: [{name: input, datatype: FP32, shape: [-1, 65]}]
output:
  schema: {label: {type: integer}}
  tensors: [{name: label, datatype: INT64, shape: [-1]}]
"#;
    expect_one(
        &Fixture::onnx(yaml),
        "input.tensors[0].shape",
        ProblemKind::InvalidValue,
    );
}

#[test]
fn classifier_on_an_undeclared_tensor() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "  tensors:\n    - {name: label",
        "  classifier: {tensor: scores, label_field: label, confidence_field: label}\n  tensors:\n    - {name: label",
    ));
    expect_one(&f, "output.classifier.tensor", ProblemKind::InvalidValue);
}

#[test]
fn classifier_labels_file_missing() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "  tensors:\n    - {name: label",
        "  classifier: {tensor: probabilities, labels: labels.txt, confidence_field: label}\n  tensors:\n    - {name: label",
    ));
    expect_one(&f, "output.classifier.labels", ProblemKind::FileMissing);
}

#[test]
fn classifier_fields_missing_from_the_schema() {
    let f = Fixture::onnx(&edit(
        GOOD_ONNX,
        "  tensors:\n    - {name: label",
        "  classifier: {tensor: probabilities}\n  tensors:\n    - {name: label",
    ));
    expect_one(&f, "output.schema.confidence", ProblemKind::Missing);
}

// --- every problem, not just the first ---------------------------------------------------

#[test]
fn all_problems_are_reported_at_once() {
    let yaml = r#"
model_id: "bad id"
version: "2.0"
input: {type: video}
output:
  schema: {x: {type: tuple}}
timeouts: {inference_ms: -5}
surprise: true
"#;
    let f = Fixture::python(yaml);
    let mut paths: Vec<_> = f
        .problems(&cpu_host())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            "input.type",
            "model_id",
            "output.schema.x.type",
            "surprise",
            "timeouts.inference_ms",
            "version",
        ]
    );
}

#[test]
fn the_bundled_models_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut seen = 0;
    for model in fs::read_dir(&root).unwrap() {
        let model = model.unwrap().path();
        if !model.is_dir() {
            continue;
        }
        for version in fs::read_dir(&model).unwrap() {
            let version = version.unwrap().path();
            if version.join("model.yaml").exists() {
                if let Err(e) = validate_version_dir(&version, &cpu_host()) {
                    panic!("{}: {}", version.display(), e.summary());
                }
                seen += 1;
            }
        }
    }
    assert!(seen >= 3, "expected the bundled models, found {seen}");
}
