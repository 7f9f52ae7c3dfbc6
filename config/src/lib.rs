//! The contracts ward reads from disk, and the pure decisions made from them.
//!
//! - [`model`]: the `model.yaml` contract of spec 003 §4.2 plus ward's
//!   additions (backend, runtime modes, timeouts, resources, tensors, frame
//!   preprocessing), and its validation ([`validate_version_dir`]), which
//!   reports **every** problem with its field path.
//! - [`ward`]: the supervisor's own configuration (`ward.yaml`), where every
//!   field has a default from the spec, plus `WARD_*` environment overrides.
//! - [`mode`]: runtime mode selection (spec 000 §5) as a pure function that
//!   returns the mode and the reason.
//!
//! Plugins are untrusted, so `model.yaml` is parsed with budgets on nesting,
//! aliases and size ([`yaml`]), and no path it names may leave its directory.
//! Nothing here does I/O beyond reading the files it is given.

pub mod mode;
pub mod model;
mod problem;
mod reader;
pub mod schema;
mod tensor;
pub mod ward;
mod yaml;

pub use mode::{Mode, ModeChoice, ModeInputs, ModeReason, NoMode, select_mode};
pub use model::{
    Backend, ClassifierSpec, ColorOrder, EntryPoints, FieldSchema, FieldType, FrameFormat,
    FrameSpec, GpuInfo, Hardware, HealthCheckOverrides, HostInfo, InputKind, InputSpec, Layout,
    ModelContract, ModelId, OutputSpec, Performance, Preprocessing, Resources, RuntimeSpec,
    TensorSpec, Timeouts, validate_contract, validate_version_dir,
};
pub use problem::{Invalid, Problem, ProblemKind};
pub use schema::validate_output;
pub use tensor::{TensorMismatch, fmt_shape, shape_fits};
pub use ward::{ConfigError, WardConfig};
pub use yaml::{YamlError, YamlLimits};
