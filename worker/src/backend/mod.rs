//! Model backends: how one model version is loaded and run.
//!
//! A request goes through the steps `model.yaml` names: `preprocess` (a frame
//! becomes the input tensor), `check` (tensors against the declared inputs),
//! the ONNX or Python backend itself, and `postprocess` (the classifier's
//! structured output). `load` builds and warms up a backend; `infer` is the
//! face the event loop sees.

pub mod check;
mod infer;
mod load;
mod onnx;
pub mod phase;
pub mod postprocess;
pub mod preprocess;
mod python;

pub use infer::{Backend, Failure, Fatal, Infer, Outcome};
pub use load::{Serving, lanes, load, load_for_serving};
pub use onnx::OnnxBackend;
pub use python::PythonBackend;
