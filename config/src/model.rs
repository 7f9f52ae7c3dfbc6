//! The model contract (`model.yaml`, spec 003 §4.2 plus DESIGN §3) and its
//! validation (spec 003 §3.4).
//!
//! Validation reads the file into a generic tree and walks it, recording a
//! [`Problem`](crate::Problem) for every broken rule, so an operator sees all of
//! them at once. Only a contract with no problems becomes a [`ModelContract`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde_json::Value;
use ward_protocol::DataType;

use crate::mode::Mode;
use crate::problem::{Invalid, ProblemKind, Problems};
use crate::reader::{Obj, as_choice, as_float, as_int, as_str, as_uint, index, join};
use crate::yaml::{self, YamlLimits};

/// The contract file inside a version directory.
pub const CONTRACT_FILE: &str = "model.yaml";
/// Where an ONNX model's weights live unless `weights` says otherwise.
pub const DEFAULT_WEIGHTS: &str = "weights/model.onnx";
pub const DEFAULT_INFERENCE: &str = "inference.py";
pub const DEFAULT_PREPROCESS: &str = "preprocessing.py";
pub const DEFAULT_POSTPROCESS: &str = "postprocessing.py";
/// The schema field a classifier with `top_k > 1` fills with its best candidates.
pub const CLASSIFIER_CANDIDATES: &str = "candidates";

/// A model identifier: ASCII letters, digits and underscores, 1–64 long, and a
/// letter or digit first (spec 003 §4.2 says "alphanumeric + underscore").
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelId(String);

impl ModelId {
    pub fn parse(s: &str) -> Result<ModelId, String> {
        let ok_len = (1..=64).contains(&s.len());
        let ok_chars = s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let ok_first = s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        if ok_len && ok_chars && ok_first {
            Ok(ModelId(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a model id (1-64 ASCII letters, digits or underscores, starting with a letter or digit)"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Onnx,
    Python,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Onnx => "onnx",
            Backend::Python => "python",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    Frame,
    Batch,
    Temporal,
}

impl InputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::Frame => "frame",
            InputKind::Batch => "batch",
            InputKind::Temporal => "temporal",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    Jpeg,
    Png,
    RawRgb,
    RawBgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorOrder {
    Rgb,
    Bgr,
    Gray,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// A declared tensor: `-1` marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// Declarative preprocessing of a decoded frame into the input tensor:
/// `value = ((pixel * scale) - mean[c]) / std[c]`, optionally inverted first.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessing {
    /// Target (width, height); `None` keeps the decoded size.
    pub resize: Option<(u32, u32)>,
    pub color: ColorOrder,
    pub layout: Layout,
    /// `pixel = 255 - pixel` before scaling (dark-on-light pictures for models
    /// trained on light-on-dark data).
    pub invert: bool,
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FrameSpec {
    pub format: Option<FrameFormat>,
    pub min_width: u32,
    pub min_height: u32,
    pub max_width: u32,
    pub max_height: u32,
    pub channels: u32,
    pub preprocessing: Preprocessing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub kind: InputKind,
    pub frame: Option<FrameSpec>,
    pub tensors: Vec<TensorSpec>,
}

/// The type of one field of the structured output.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldType {
    String {
        allowed: Option<Vec<String>>,
    },
    Float {
        min: Option<f64>,
        max: Option<f64>,
    },
    Integer {
        min: Option<i64>,
        max: Option<i64>,
    },
    Boolean,
    Array {
        items: Box<FieldSchema>,
    },
    Object {
        properties: BTreeMap<String, FieldSchema>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldSchema {
    pub ty: FieldType,
    pub optional: bool,
}

/// Classifier postprocessing: turns a score tensor into `label`/`confidence`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassifierSpec {
    pub tensor: String,
    pub softmax: bool,
    pub top_k: u32,
    pub labels: Option<PathBuf>,
    pub label_field: String,
    pub confidence_field: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub schema: BTreeMap<String, FieldSchema>,
    pub tensors: Vec<TensorSpec>,
    pub classifier: Option<ClassifierSpec>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Hardware {
    pub supports_cpu: bool,
    pub supports_gpu: bool,
    pub supports_jetson: bool,
    pub min_gpu_memory_mb: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Performance {
    pub recommended_batch_size: u32,
    pub recommended_fps: Option<f64>,
    pub inference_time_hint_ms: Option<f64>,
}

/// Python entry points, relative to the version directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryPoints {
    pub inference: PathBuf,
    pub preprocess: Option<PathBuf>,
    pub postprocess: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSpec {
    pub modes: Vec<Mode>,
    pub preferred: Option<Mode>,
    pub image: Option<String>,
}

/// Per-model phase timeouts; `None` takes the supervisor's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub inference_ms: Option<u64>,
    pub preprocess_ms: Option<u64>,
    pub postprocess_ms: Option<u64>,
}

/// Per-model health-check knobs (ward.yaml's `health_check`, spec 002's
/// interval, timeout, retries and start period); `None` takes the
/// supervisor's value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCheckOverrides {
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub start_period_ms: Option<u64>,
}

impl HealthCheckOverrides {
    /// The effective settings: each field set here wins over `base`.
    pub fn over(&self, base: &crate::ward::HealthCheckConfig) -> crate::ward::HealthCheckConfig {
        crate::ward::HealthCheckConfig {
            interval_ms: self.interval_ms.unwrap_or(base.interval_ms),
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            retries: self.retries.unwrap_or(base.retries),
            start_period_ms: self.start_period_ms.unwrap_or(base.start_period_ms),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub memory_mb: Option<u64>,
    pub cpus: Option<f64>,
    pub gpu_memory_mb: Option<u64>,
}

/// A validated contract of one model version.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelContract {
    pub model_id: ModelId,
    pub version: semver::Version,
    pub display_name: String,
    pub description: Option<String>,
    pub backend: Backend,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub hardware: Hardware,
    pub performance: Performance,
    pub entry_points: EntryPoints,
    /// ONNX weights, relative to the version directory.
    pub weights: PathBuf,
    pub runtime: RuntimeSpec,
    pub timeouts: Timeouts,
    pub health_check: HealthCheckOverrides,
    pub resources: Resources,
}

/// What validation needs to know about the host (spec 003 §3.4, last row).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub gpu: Option<GpuInfo>,
    pub jetson: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    pub name: String,
    /// Total device memory; `None` when the probe could not tell.
    pub memory_mb: Option<u64>,
}

const TOP_KEYS: &[&str] = &[
    "model_id",
    "version",
    "display_name",
    "description",
    "backend",
    "input",
    "output",
    "hardware",
    "performance",
    "entry_points",
    "weights",
    "runtime",
    "timeouts",
    "health_check",
    "resources",
    "metadata",
];

/// Validates the version directory `dir` (`<root>/<model_id>/<version>/`)
/// against spec 003 §3.4, reporting every problem found.
pub fn validate_version_dir(dir: &Path, host: &HostInfo) -> Result<ModelContract, Invalid> {
    let text = read_contract_file(dir)?;
    validate_contract(&text, dir, host)
}

/// Validates contract `text` as if it were `dir`'s model.yaml: every file it
/// names is looked up under `dir`.
pub fn validate_contract(
    text: &str,
    dir: &Path,
    host: &HostInfo,
) -> Result<ModelContract, Invalid> {
    let tree = yaml::parse_value(text, YamlLimits::UNTRUSTED).map_err(|e| {
        single(
            CONTRACT_FILE,
            ProblemKind::Syntax,
            format!("not valid YAML: {e}"),
        )
    })?;
    let mut p = Problems::default();
    let contract = Obj::new(&tree, String::new(), &mut p)
        .and_then(|top| read_contract(&top, dir, host, &mut p));
    match contract {
        Some(c) if p.is_empty() => Ok(c),
        _ => Err(Invalid { problems: p.0 }),
    }
}

/// Reads model.yaml, never more than the parsing budget allows (a plugin
/// could ship a multi-gigabyte "contract").
fn read_contract_file(dir: &Path) -> Result<String, Invalid> {
    read_bounded(&dir.join(CONTRACT_FILE)).map_err(|e| match e {
        BoundedRead::Missing => single(
            CONTRACT_FILE,
            ProblemKind::FileMissing,
            "model.yaml does not exist",
        ),
        BoundedRead::Io(e) => single(
            CONTRACT_FILE,
            ProblemKind::FileMissing,
            format!("cannot read: {e}"),
        ),
        other => single(CONTRACT_FILE, ProblemKind::Syntax, other.to_string()),
    })
}

/// Reads a plugin's `config.yaml` (as untrusted as its model.yaml) into a
/// generic tree, for handing to the plugin.
pub fn read_plugin_config(path: &Path) -> Result<Value, String> {
    let text = read_bounded(path).map_err(|e| e.to_string())?;
    yaml::parse_value(&text, YamlLimits::UNTRUSTED).map_err(|e| format!("not valid YAML: {e}"))
}

#[derive(Debug, thiserror::Error)]
enum BoundedRead {
    #[error("does not exist")]
    Missing,
    #[error("cannot read: {0}")]
    Io(std::io::Error),
    #[error("larger than the {0}-byte limit")]
    TooLarge(usize),
    #[error("not UTF-8 text")]
    NotUtf8,
}

fn read_bounded(path: &Path) -> Result<String, BoundedRead> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BoundedRead::Missing,
        _ => BoundedRead::Io(e),
    })?;
    let max = YamlLimits::UNTRUSTED.max_bytes;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(BoundedRead::Io)?;
    if bytes.len() > max {
        return Err(BoundedRead::TooLarge(max));
    }
    String::from_utf8(bytes).map_err(|_| BoundedRead::NotUtf8)
}

fn single(path: &str, kind: ProblemKind, message: impl Into<String>) -> Invalid {
    let mut p = Problems::default();
    p.push(path, kind, message);
    Invalid { problems: p.0 }
}

fn dir_name(dir: &Path) -> Option<String> {
    dir.file_name().and_then(|n| n.to_str()).map(str::to_owned)
}

fn read_contract(
    top: &Obj<'_>,
    dir: &Path,
    host: &HostInfo,
    p: &mut Problems,
) -> Option<ModelContract> {
    top.known(TOP_KEYS, p);

    let model_id = top
        .req_str("model_id", p)
        .and_then(|s| match ModelId::parse(s) {
            Ok(id) => Some(id),
            Err(msg) => {
                p.push("model_id", ProblemKind::InvalidValue, msg);
                None
            }
        });
    if let (Some(id), Some(parent)) = (&model_id, dir.parent().and_then(dir_name))
        && id.as_str() != parent
    {
        p.push(
            "model_id",
            ProblemKind::Mismatch,
            format!("model_id {id:?} does not match its directory name {parent:?}"),
        );
    }

    let version = top
        .require("version", p)
        .and_then(|v| read_version(v, dir, p));
    let display_name = top.str("display_name", p).map(str::to_owned);
    let description = top.str("description", p).map(str::to_owned);
    let backend_decl = top.choice(
        "backend",
        &[("onnx", Backend::Onnx), ("python", Backend::Python)],
        p,
    );

    let input = top.req_obj("input", p).and_then(|o| read_input(&o, p));
    let output = top
        .req_obj("output", p)
        .and_then(|o| read_output(&o, dir, p));
    let hardware = read_hardware(top, host, p);
    let performance = read_performance(top, p);
    let runtime = read_runtime(top, p);
    let timeouts = read_timeouts(top, p);
    let health_check = read_health_check(top, p);
    let resources = read_resources(top, p);
    if let Some(m) = top.get("metadata") {
        Obj::new(m, "metadata".into(), p);
    }

    let weights_decl = top
        .str("weights", p)
        .and_then(|s| safe_relative(s, "weights", p));
    let entry_points = read_entry_points(top, p);

    // The backend: as declared, else inferred from what the directory holds.
    let weights = weights_decl
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_WEIGHTS));
    let backend = backend_decl.or_else(|| {
        if dir.join(&weights).is_file() {
            Some(Backend::Onnx)
        } else if entry_points.as_ref().is_some_and(|e| dir.join(&e.inference).is_file()) {
            Some(Backend::Python)
        } else if entry_points.is_none() {
            // The entry point itself is broken, and that problem is already reported.
            None
        } else {
            p.push(
                "backend",
                ProblemKind::Missing,
                format!("not declared, and the directory holds neither {DEFAULT_WEIGHTS} nor {DEFAULT_INFERENCE} to infer it from"),
            );
            None
        }
    });

    // The inference entry point must exist (spec 003 §3.4).
    if let (Some(backend), Some(eps)) = (backend, &entry_points) {
        match backend {
            Backend::Onnx => {
                check_file(dir, &weights, "weights", p);
                if let Some(input) = &input
                    && input.tensors.is_empty()
                {
                    p.push(
                        "input.tensors",
                        ProblemKind::Missing,
                        "an onnx model must declare its input tensors",
                    );
                }
                if let Some(output) = &output
                    && output.tensors.is_empty()
                {
                    p.push(
                        "output.tensors",
                        ProblemKind::Missing,
                        "an onnx model must declare its output tensors",
                    );
                }
            }
            Backend::Python => {
                check_file(dir, &eps.inference, "entry_points.inference", p);
            }
        }
        for (field, path) in [
            ("entry_points.preprocess", &eps.preprocess),
            ("entry_points.postprocess", &eps.postprocess),
        ] {
            if let Some(path) = path {
                check_file(dir, path, field, p);
            }
        }
    }

    // Cross-field rules.
    if let (Some(input), Some(output)) = (&input, &output) {
        if let Some(c) = &output.classifier
            && !output.tensors.is_empty()
            && !output.tensors.iter().any(|t| t.name == c.tensor)
        {
            p.push(
                "output.classifier.tensor",
                ProblemKind::InvalidValue,
                format!("{:?} is not one of the declared output tensors", c.tensor),
            );
        }
        if let Some(frame) = &input.frame {
            if backend == Some(Backend::Onnx) && input.tensors.len() != 1 {
                p.push(
                    "input.tensors",
                    ProblemKind::InvalidValue,
                    "a frame model with an onnx backend takes exactly one input tensor (the preprocessed frame)",
                );
            }
            check_frame_tensor(frame, input.tensors.first(), p);
        }
    }

    Some(ModelContract {
        model_id: model_id?,
        version: version?,
        display_name: display_name.unwrap_or_default(),
        description,
        backend: backend?,
        input: input?,
        output: output?,
        hardware: hardware?,
        performance: performance?,
        entry_points: entry_points?,
        weights,
        runtime: runtime?,
        timeouts: timeouts?,
        health_check: health_check?,
        resources: resources?,
    })
}

fn read_version(v: &Value, dir: &Path, p: &mut Problems) -> Option<semver::Version> {
    let Some(s) = v.as_str() else {
        p.push(
            "version",
            ProblemKind::WrongType,
            format!("expected a semantic version string such as \"1.0.0\" (quote it), found {v}"),
        );
        return None;
    };
    let version = match semver::Version::parse(s) {
        Ok(v) => v,
        Err(e) => {
            p.push(
                "version",
                ProblemKind::InvalidValue,
                format!("{s:?} is not a semantic version: {e}"),
            );
            return None;
        }
    };
    if let Some(name) = dir_name(dir)
        && name != s
    {
        p.push(
            "version",
            ProblemKind::Mismatch,
            format!("version {s:?} does not match its directory name {name:?}"),
        );
    }
    Some(version)
}

fn read_tensors(o: &Obj<'_>, key: &str, p: &mut Problems) -> Option<Vec<TensorSpec>> {
    let Some(items) = o.list(key, p) else {
        return if o.get(key).is_some() {
            None
        } else {
            Some(Vec::new())
        };
    };
    let base = o.at(key);
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let path = index(&base, i);
        let Some(t) = Obj::new(item, path.clone(), p) else {
            ok = false;
            continue;
        };
        t.known(&["name", "datatype", "shape"], p);
        let name = t.req_str("name", p).map(str::to_owned);
        if let Some(n) = &name {
            if n.is_empty() {
                p.push(
                    t.at("name"),
                    ProblemKind::InvalidValue,
                    "tensor names cannot be empty",
                );
            } else if out.iter().any(|x: &TensorSpec| &x.name == n) {
                p.push(
                    t.at("name"),
                    ProblemKind::InvalidValue,
                    format!("tensor {n:?} is declared twice"),
                );
            }
        }
        let datatype = t
            .req_str("datatype", p)
            .and_then(|s| match s.parse::<DataType>() {
                Ok(d) => Some(d),
                Err(e) => {
                    p.push(t.at("datatype"), ProblemKind::InvalidValue, e.to_string());
                    None
                }
            });
        let shape = t
            .require("shape", p)
            .and_then(|v| read_shape(v, &t.at("shape"), p));
        match (name, datatype, shape) {
            (Some(name), Some(datatype), Some(shape)) => out.push(TensorSpec {
                name,
                datatype,
                shape,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

fn read_shape(v: &Value, path: &str, p: &mut Problems) -> Option<Vec<i64>> {
    let Value::Array(dims) = v else {
        p.push(
            path,
            ProblemKind::WrongType,
            "expected a list of dimensions, e.g. [-1, 64]",
        );
        return None;
    };
    if dims.len() > 8 {
        p.push(path, ProblemKind::InvalidValue, "at most 8 dimensions");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, d) in dims.iter().enumerate() {
        match as_int(d, &index(path, i), p) {
            Some(n) if n == -1 || n > 0 => out.push(n),
            Some(n) => {
                p.push(
                    index(path, i),
                    ProblemKind::InvalidValue,
                    format!("dimension {n} must be positive, or -1 for dynamic"),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn read_input(o: &Obj<'_>, p: &mut Problems) -> Option<InputSpec> {
    o.known(
        &[
            "type",
            "format",
            "min_width",
            "min_height",
            "max_width",
            "max_height",
            "channels",
            "preprocessing",
            "tensors",
        ],
        p,
    );
    let kind = o.require("type", p).and_then(|v| {
        as_choice(
            v,
            &o.at("type"),
            &[
                ("frame", InputKind::Frame),
                ("batch", InputKind::Batch),
                ("temporal", InputKind::Temporal),
            ],
            p,
        )
    });
    let tensors = read_tensors(o, "tensors", p);
    let frame = match kind {
        Some(InputKind::Frame) => Some(read_frame(o, p)?),
        _ => {
            for key in [
                "format",
                "min_width",
                "min_height",
                "max_width",
                "max_height",
                "channels",
                "preprocessing",
            ] {
                if o.get(key).is_some() {
                    p.push(
                        o.at(key),
                        ProblemKind::InvalidValue,
                        "only meaningful for input.type: frame",
                    );
                }
            }
            None
        }
    };
    Some(InputSpec {
        kind: kind?,
        frame,
        tensors: tensors?,
    })
}

const MAX_SIDE: u64 = 16_384;

fn read_frame(o: &Obj<'_>, p: &mut Problems) -> Option<FrameSpec> {
    let format = o.choice(
        "format",
        &[
            ("jpeg", FrameFormat::Jpeg),
            ("png", FrameFormat::Png),
            ("raw_rgb", FrameFormat::RawRgb),
            ("raw_bgr", FrameFormat::RawBgr),
        ],
        p,
    );
    let dim = |key: &str, default: u64, p: &mut Problems| -> Option<u32> {
        match o.get(key) {
            None => Some(default as u32),
            Some(_) => o.uint(key, 1, MAX_SIDE, p).map(|n| n as u32),
        }
    };
    let min_width = dim("min_width", 1, p);
    let min_height = dim("min_height", 1, p);
    let max_width = dim("max_width", MAX_SIDE, p);
    let max_height = dim("max_height", MAX_SIDE, p);
    let channels = match o.get("channels") {
        None => Some(3),
        Some(v) => match as_uint(v, &o.at("channels"), 1, 4, p) {
            Some(c @ (1 | 3)) => Some(c as u32),
            Some(c) => {
                p.push(
                    o.at("channels"),
                    ProblemKind::InvalidValue,
                    format!("{c} channels: expected 1 (gray) or 3 (color)"),
                );
                None
            }
            None => None,
        },
    };
    if let (Some(lo), Some(hi)) = (min_width, max_width)
        && lo > hi
    {
        p.push(
            o.at("max_width"),
            ProblemKind::InvalidValue,
            format!("max_width {hi} is below min_width {lo}"),
        );
    }
    if let (Some(lo), Some(hi)) = (min_height, max_height)
        && lo > hi
    {
        p.push(
            o.at("max_height"),
            ProblemKind::InvalidValue,
            format!("max_height {hi} is below min_height {lo}"),
        );
    }
    let preprocessing = read_preprocessing(o, channels.unwrap_or(3), p);
    Some(FrameSpec {
        format,
        min_width: min_width?,
        min_height: min_height?,
        max_width: max_width?,
        max_height: max_height?,
        channels: channels?,
        preprocessing: preprocessing?,
    })
}

fn read_preprocessing(input: &Obj<'_>, channels: u32, p: &mut Problems) -> Option<Preprocessing> {
    let default_color = if channels == 1 {
        ColorOrder::Gray
    } else {
        ColorOrder::Rgb
    };
    let Some(o) = input.obj("preprocessing", p) else {
        return if input.get("preprocessing").is_some() {
            None
        } else {
            Some(Preprocessing {
                resize: None,
                color: default_color,
                layout: Layout::Nchw,
                invert: false,
                scale: 1.0 / 255.0,
                mean: Vec::new(),
                std: Vec::new(),
            })
        };
    };
    o.known(
        &[
            "resize", "color", "layout", "invert", "scale", "mean", "std",
        ],
        p,
    );
    let resize = match o.obj("resize", p) {
        Some(r) => {
            r.known(&["width", "height"], p);
            let w = r
                .require("width", p)
                .and_then(|v| as_uint(v, &r.at("width"), 1, MAX_SIDE, p));
            let h = r
                .require("height", p)
                .and_then(|v| as_uint(v, &r.at("height"), 1, MAX_SIDE, p));
            Some(Some((w? as u32, h? as u32)))
        }
        None if o.get("resize").is_some() => None,
        None => Some(None),
    };
    let color = o
        .choice(
            "color",
            &[
                ("rgb", ColorOrder::Rgb),
                ("bgr", ColorOrder::Bgr),
                ("gray", ColorOrder::Gray),
            ],
            p,
        )
        .or(if o.get("color").is_some() {
            None
        } else {
            Some(default_color)
        });
    if let Some(c) = color {
        let want = if c == ColorOrder::Gray { 1 } else { 3 };
        if want != channels {
            p.push(
                o.at("color"),
                ProblemKind::InvalidValue,
                format!("color {c:?} needs {want} channel(s), input.channels is {channels}"),
            );
        }
    }
    let layout = o
        .choice(
            "layout",
            &[("NCHW", Layout::Nchw), ("NHWC", Layout::Nhwc)],
            p,
        )
        .or(if o.get("layout").is_some() {
            None
        } else {
            Some(Layout::Nchw)
        });
    let invert = o.bool("invert", p).unwrap_or(false);
    let scale = match o.get("scale") {
        None => Some(1.0 / 255.0),
        Some(_) => o.float("scale", -1e6, 1e6, p),
    };
    let per_channel = |key: &str, default: f32, p: &mut Problems| -> Option<Vec<f32>> {
        let Some(items) = o.list(key, p) else {
            return if o.get(key).is_some() {
                None
            } else {
                Some(vec![default; channels as usize])
            };
        };
        if items.len() != channels as usize {
            p.push(
                o.at(key),
                ProblemKind::InvalidValue,
                format!(
                    "expected {channels} value(s), one per channel, found {}",
                    items.len()
                ),
            );
            return None;
        }
        let vals: Vec<_> = items
            .iter()
            .enumerate()
            .map(|(i, v)| as_float(v, &index(&o.at(key), i), -1e6, 1e6, p).map(|f| f as f32))
            .collect();
        vals.into_iter().collect()
    };
    let mean = per_channel("mean", 0.0, p);
    let std = per_channel("std", 1.0, p);
    if let Some(std) = &std
        && std.contains(&0.0)
    {
        p.push(
            o.at("std"),
            ProblemKind::InvalidValue,
            "std values must not be zero",
        );
    }
    Some(Preprocessing {
        resize: resize?,
        color: color?,
        layout: layout?,
        invert,
        scale: scale? as f32,
        mean: mean?,
        std: std?,
    })
}

/// The frame tensor's fixed dimensions must agree with the preprocessing.
fn check_frame_tensor(frame: &FrameSpec, tensor: Option<&TensorSpec>, p: &mut Problems) {
    let Some(t) = tensor else { return };
    let Some((w, h)) = frame.preprocessing.resize else {
        return;
    };
    let c = i64::from(frame.channels);
    let (w, h) = (i64::from(w), i64::from(h));
    let expected: Vec<i64> = match frame.preprocessing.layout {
        Layout::Nchw => vec![c, h, w],
        Layout::Nhwc => vec![h, w, c],
    };
    let fixed: i64 = t.shape.iter().filter(|d| **d > 0).product();
    let fits = match t.shape.len() {
        4 => t.shape[1..]
            .iter()
            .zip(&expected)
            .all(|(d, e)| *d == -1 || d == e),
        // A flat [N, C*H*W] tensor, as a plain MLP takes.
        2 => t.shape[1] == -1 || t.shape[1] == c * h * w,
        _ => false,
    };
    if !fits || fixed <= 0 {
        p.push(
            "input.tensors[0].shape",
            ProblemKind::InvalidValue,
            format!(
                "shape {:?} does not fit the preprocessed frame ({c} channel(s), {w}x{h}, {:?}): expected [N, {}] or [N, {c}x{h}x{w} flattened]",
                t.shape,
                frame.preprocessing.layout,
                expected.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
            ),
        );
    }
    if t.datatype != DataType::Fp32 {
        p.push(
            "input.tensors[0].datatype",
            ProblemKind::InvalidValue,
            "a preprocessed frame is FP32",
        );
    }
}

fn read_output(o: &Obj<'_>, dir: &Path, p: &mut Problems) -> Option<OutputSpec> {
    o.known(&["schema", "tensors", "classifier"], p);
    let schema = o.req_obj("schema", p).and_then(|s| {
        if s.map.is_empty() {
            p.push(
                s.path.clone(),
                ProblemKind::InvalidValue,
                "the output schema declares no fields",
            );
            return None;
        }
        read_properties(&s, p)
    });
    let tensors = read_tensors(o, "tensors", p);
    let classifier = match o.obj("classifier", p) {
        Some(c) => Some(Some(read_classifier(&c, dir, p)?)),
        None if o.get("classifier").is_some() => None,
        None => Some(None),
    };
    if let (Some(schema), Some(Some(c))) = (&schema, &classifier) {
        let candidates = (c.top_k > 1).then(|| CLASSIFIER_CANDIDATES.to_owned());
        for field in [
            Some(&c.label_field),
            Some(&c.confidence_field),
            candidates.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            if !schema.contains_key(field) {
                p.push(
                    join("output.schema", field),
                    ProblemKind::Missing,
                    "the classifier produces this field, so the schema must declare it",
                );
            }
        }
    }
    Some(OutputSpec {
        schema: schema?,
        tensors: tensors?,
        classifier: classifier?,
    })
}

fn read_classifier(o: &Obj<'_>, dir: &Path, p: &mut Problems) -> Option<ClassifierSpec> {
    o.known(
        &[
            "tensor",
            "softmax",
            "top_k",
            "labels",
            "label_field",
            "confidence_field",
        ],
        p,
    );
    let tensor = o.req_str("tensor", p).map(str::to_owned);
    let softmax = o.bool("softmax", p).unwrap_or(false);
    let top_k = match o.get("top_k") {
        None => Some(1),
        Some(_) => o.uint("top_k", 1, 1000, p).map(|k| k as u32),
    };
    let labels = match o.str("labels", p) {
        Some(s) => {
            let path = safe_relative(s, &o.at("labels"), p);
            if let Some(path) = &path {
                check_file(dir, path, &o.at("labels"), p);
            }
            Some(Some(path?))
        }
        None if o.get("labels").is_some() => None,
        None => Some(None),
    };
    let label_field = o.str("label_field", p).unwrap_or("label").to_owned();
    let confidence_field = o
        .str("confidence_field", p)
        .unwrap_or("confidence")
        .to_owned();
    Some(ClassifierSpec {
        tensor: tensor?,
        softmax,
        top_k: top_k?,
        labels: labels?,
        label_field,
        confidence_field,
    })
}

fn read_properties(o: &Obj<'_>, p: &mut Problems) -> Option<BTreeMap<String, FieldSchema>> {
    read_properties_at(o, 0, p)
}

fn read_field(v: &Value, path: &str, depth: usize, p: &mut Problems) -> Option<FieldSchema> {
    let o = Obj::new(v, path.to_owned(), p)?;
    if depth > 8 {
        p.push(
            path,
            ProblemKind::InvalidValue,
            "output schema nested more than 8 levels deep",
        );
        return None;
    }
    let ty_name = o.req_str("type", p)?;
    let optional = o.bool("optional", p).unwrap_or(false);
    let ty = match ty_name {
        "string" => {
            o.known(&["type", "optional", "enum"], p);
            let allowed = match o.list("enum", p) {
                Some(items) => {
                    let vals: Option<Vec<String>> = items
                        .iter()
                        .enumerate()
                        .map(|(i, v)| as_str(v, &index(&o.at("enum"), i), p).map(str::to_owned))
                        .collect();
                    Some(vals?)
                }
                None if o.get("enum").is_some() => return None,
                None => None,
            };
            FieldType::String { allowed }
        }
        "float" | "number" => {
            o.known(&["type", "optional", "min", "max"], p);
            let min = o.float("min", f64::MIN, f64::MAX, p);
            let max = o.float("max", f64::MIN, f64::MAX, p);
            if let (Some(lo), Some(hi)) = (min, max)
                && lo > hi
            {
                p.push(
                    o.at("max"),
                    ProblemKind::InvalidValue,
                    format!("max {hi} is below min {lo}"),
                );
            }
            FieldType::Float { min, max }
        }
        "integer" => {
            o.known(&["type", "optional", "min", "max"], p);
            let min = o.get("min").and_then(|v| as_int(v, &o.at("min"), p));
            let max = o.get("max").and_then(|v| as_int(v, &o.at("max"), p));
            FieldType::Integer { min, max }
        }
        "boolean" => {
            o.known(&["type", "optional"], p);
            FieldType::Boolean
        }
        "array" => {
            o.known(&["type", "optional", "items"], p);
            let items = o
                .require("items", p)
                .and_then(|v| read_field(v, &o.at("items"), depth + 1, p))?;
            FieldType::Array {
                items: Box::new(items),
            }
        }
        "object" => {
            o.known(&["type", "optional", "properties"], p);
            let props = o.req_obj("properties", p)?;
            FieldType::Object {
                properties: read_properties_at(&props, depth + 1, p)?,
            }
        }
        other => {
            p.push(
                o.at("type"),
                ProblemKind::InvalidValue,
                format!("unknown type {other:?} (expected one of: string, float, integer, boolean, array, object)"),
            );
            return None;
        }
    };
    Some(FieldSchema { ty, optional })
}

fn read_properties_at(
    o: &Obj<'_>,
    depth: usize,
    p: &mut Problems,
) -> Option<BTreeMap<String, FieldSchema>> {
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, v) in o.map {
        match read_field(v, &o.at(name), depth, p) {
            Some(f) => {
                out.insert(name.clone(), f);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn read_hardware(top: &Obj<'_>, host: &HostInfo, p: &mut Problems) -> Option<Hardware> {
    let Some(o) = top.obj("hardware", p) else {
        return if top.get("hardware").is_some() {
            None
        } else {
            Some(Hardware {
                supports_cpu: true,
                supports_gpu: false,
                supports_jetson: false,
                min_gpu_memory_mb: None,
            })
        };
    };
    o.known(
        &[
            "supports_cpu",
            "supports_gpu",
            "supports_jetson",
            "min_gpu_memory_mb",
        ],
        p,
    );
    let hw = Hardware {
        supports_cpu: o.bool("supports_cpu", p).unwrap_or(true),
        supports_gpu: o.bool("supports_gpu", p).unwrap_or(false),
        supports_jetson: o.bool("supports_jetson", p).unwrap_or(false),
        min_gpu_memory_mb: o.uint("min_gpu_memory_mb", 1, 1 << 24, p),
    };
    if !hw.supports_cpu && !hw.supports_gpu && !hw.supports_jetson {
        p.push(
            "hardware",
            ProblemKind::InvalidValue,
            "the model supports no hardware at all",
        );
        return Some(hw);
    }
    // Hardware compatibility with this host (spec 003 §3.4).
    let gpu_fits = match (&host.gpu, hw.supports_gpu) {
        (Some(gpu), true) => match (hw.min_gpu_memory_mb, gpu.memory_mb) {
            (Some(need), Some(have)) => have >= need,
            // Memory unknown: the load itself will tell.
            _ => true,
        },
        _ => false,
    };
    let runs_here = hw.supports_cpu || gpu_fits || (hw.supports_jetson && host.jetson);
    if !runs_here {
        let why = match (&host.gpu, hw.min_gpu_memory_mb) {
            (None, _) => "the model does not support CPU and this host has no GPU".to_owned(),
            (Some(gpu), Some(need)) if hw.supports_gpu => format!(
                "the model needs {need} MB of GPU memory; this host's {} has {} MB",
                gpu.name,
                gpu.memory_mb.unwrap_or(0)
            ),
            (Some(_), _) => "the model supports neither CPU nor this host's GPU".to_owned(),
        };
        p.push("hardware", ProblemKind::Incompatible, why);
    }
    Some(hw)
}

fn read_performance(top: &Obj<'_>, p: &mut Problems) -> Option<Performance> {
    let Some(o) = top.obj("performance", p) else {
        return if top.get("performance").is_some() {
            None
        } else {
            Some(Performance {
                recommended_batch_size: 1,
                recommended_fps: None,
                inference_time_hint_ms: None,
            })
        };
    };
    o.known(
        &[
            "recommended_batch_size",
            "recommended_fps",
            "inference_time_hint_ms",
        ],
        p,
    );
    Some(Performance {
        recommended_batch_size: o.uint("recommended_batch_size", 1, 65_536, p).unwrap_or(1) as u32,
        recommended_fps: o.float("recommended_fps", 0.0, 1e6, p),
        inference_time_hint_ms: o.float("inference_time_hint_ms", 0.0, 3.6e6, p),
    })
}

fn read_entry_points(top: &Obj<'_>, p: &mut Problems) -> Option<EntryPoints> {
    let Some(o) = top.obj("entry_points", p) else {
        return if top.get("entry_points").is_some() {
            None
        } else {
            Some(EntryPoints {
                inference: DEFAULT_INFERENCE.into(),
                preprocess: None,
                postprocess: None,
            })
        };
    };
    o.known(&["inference", "preprocess", "postprocess"], p);
    let path = |key: &str, p: &mut Problems| o.str(key, p).map(|s| safe_relative(s, &o.at(key), p));
    let inference = match path("inference", p) {
        Some(found) => found?,
        None => PathBuf::from(DEFAULT_INFERENCE),
    };
    let preprocess = path("preprocess", p);
    let postprocess = path("postprocess", p);
    Some(EntryPoints {
        inference,
        preprocess: preprocess.map_or(Some(None), |x| x.map(Some))?,
        postprocess: postprocess.map_or(Some(None), |x| x.map(Some))?,
    })
}

fn read_runtime(top: &Obj<'_>, p: &mut Problems) -> Option<RuntimeSpec> {
    let modes_table = [("native", Mode::Native), ("container", Mode::Container)];
    let Some(o) = top.obj("runtime", p) else {
        return if top.get("runtime").is_some() {
            None
        } else {
            Some(RuntimeSpec {
                modes: vec![Mode::Native, Mode::Container],
                preferred: None,
                image: None,
            })
        };
    };
    o.known(&["modes", "preferred", "image"], p);
    let modes = match o.list("modes", p) {
        Some(items) => {
            let mut modes = Vec::new();
            for (i, v) in items.iter().enumerate() {
                if let Some(m) = as_choice(v, &index(&o.at("modes"), i), &modes_table, p)
                    && !modes.contains(&m)
                {
                    modes.push(m);
                }
            }
            if modes.is_empty() && !items.is_empty() {
                None
            } else if items.is_empty() {
                p.push(o.at("modes"), ProblemKind::InvalidValue, "lists no mode");
                None
            } else {
                Some(modes)
            }
        }
        None if o.get("modes").is_some() => None,
        None => Some(vec![Mode::Native, Mode::Container]),
    };
    let preferred = o.choice("preferred", &modes_table, p);
    if let (Some(pref), Some(modes)) = (preferred, &modes)
        && !modes.contains(&pref)
    {
        p.push(
            o.at("preferred"),
            ProblemKind::InvalidValue,
            format!("{} is not one of runtime.modes", pref.as_str()),
        );
    }
    let image = o.str("image", p).map(str::to_owned);
    Some(RuntimeSpec {
        modes: modes?,
        preferred,
        image,
    })
}

fn read_timeouts(top: &Obj<'_>, p: &mut Problems) -> Option<Timeouts> {
    let Some(o) = top.obj("timeouts", p) else {
        return top.get("timeouts").is_none().then(Timeouts::default);
    };
    o.known(&["inference_ms", "preprocess_ms", "postprocess_ms"], p);
    const MAX_MS: u64 = 3_600_000;
    Some(Timeouts {
        inference_ms: o.uint("inference_ms", 1, MAX_MS, p),
        preprocess_ms: o.uint("preprocess_ms", 1, MAX_MS, p),
        postprocess_ms: o.uint("postprocess_ms", 1, MAX_MS, p),
    })
}

fn read_health_check(top: &Obj<'_>, p: &mut Problems) -> Option<HealthCheckOverrides> {
    let Some(o) = top.obj("health_check", p) else {
        return top
            .get("health_check")
            .is_none()
            .then(HealthCheckOverrides::default);
    };
    o.known(
        &["interval_ms", "timeout_ms", "retries", "start_period_ms"],
        p,
    );
    const MAX_MS: u64 = 3_600_000;
    Some(HealthCheckOverrides {
        interval_ms: o.uint("interval_ms", 1, MAX_MS, p),
        timeout_ms: o.uint("timeout_ms", 1, MAX_MS, p),
        retries: o.uint("retries", 1, 100, p).map(|n| n as u32),
        start_period_ms: o.uint("start_period_ms", 0, MAX_MS, p),
    })
}

fn read_resources(top: &Obj<'_>, p: &mut Problems) -> Option<Resources> {
    let Some(o) = top.obj("resources", p) else {
        return top.get("resources").is_none().then(Resources::default);
    };
    o.known(&["memory_mb", "cpus", "gpu_memory_mb"], p);
    Some(Resources {
        memory_mb: o.uint("memory_mb", 1, 1 << 24, p),
        cpus: o.float("cpus", 0.01, 1024.0, p),
        gpu_memory_mb: o.uint("gpu_memory_mb", 1, 1 << 24, p),
    })
}

/// A path named by the (untrusted) contract: relative, no `..`, not empty.
fn safe_relative(s: &str, path: &str, p: &mut Problems) -> Option<PathBuf> {
    let candidate = Path::new(s);
    let escapes = s.is_empty()
        || candidate
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        p.push(
            path,
            ProblemKind::UnsafePath,
            format!("{s:?} must be a relative path inside the model directory"),
        );
        return None;
    }
    Some(candidate.to_owned())
}

/// The file must exist, be a regular file, and (after following symlinks)
/// still lie inside the model directory.
fn check_file(dir: &Path, rel: &Path, path: &str, p: &mut Problems) {
    let full = dir.join(rel);
    match (full.canonicalize(), dir.canonicalize()) {
        (Ok(real), Ok(root)) => {
            if !real.starts_with(&root) {
                p.push(
                    path,
                    ProblemKind::UnsafePath,
                    format!("{} resolves outside the model directory", rel.display()),
                );
            } else if !real.is_file() {
                p.push(
                    path,
                    ProblemKind::FileMissing,
                    format!("{} is not a regular file", rel.display()),
                );
            }
        }
        _ => p.push(
            path,
            ProblemKind::FileMissing,
            format!("{} does not exist", rel.display()),
        ),
    }
}
