//! Checks a request's tensors against the model's declared inputs, naming the
//! exact problem: an unknown or missing input, a wrong datatype, a shape that
//! does not fit, or bytes that do not match the shape.
//!
//! The datatype, shape and byte checks are `ward_config`'s
//! [`TensorSpec::check`], the one the supervisor runs on a worker's outputs;
//! this module adds the checks by name and words the verdict for the client.
//! It also makes the synthetic input that warmup runs.

use thiserror::Error;
use ward_config::{TensorMismatch, TensorSpec, fmt_shape};
use ward_protocol::{DataType, Tensor, TensorError};

/// Why a request's tensors are not the model's inputs. The messages reach the
/// client as the `InvalidInput` error, so each names the input and, where it
/// helps, what the model takes instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InputError {
    #[error("input {name:?} is given twice")]
    GivenTwice { name: String },
    #[error("unknown input {name:?} (the model takes: {})", .takes.join(", "))]
    Unknown { name: String, takes: Vec<String> },
    #[error("missing input {name:?} ({datatype} {})", fmt_shape(.shape))]
    Missing {
        name: String,
        datatype: DataType,
        shape: Vec<i64>,
    },
    #[error("input {name:?} has datatype {actual}, the model takes {declared}")]
    Datatype {
        name: String,
        actual: DataType,
        declared: DataType,
    },
    #[error("input {name:?} has shape {actual:?}, the model takes {}", fmt_shape(.declared))]
    Shape {
        name: String,
        actual: Vec<u64>,
        declared: Vec<i64>,
    },
    /// The bytes do not match the tensor's own shape; the tensor error
    /// already names the input.
    #[error(transparent)]
    Bytes(TensorError),
}

/// The shared check's verdict, worded for a client: "the model takes".
impl From<TensorMismatch> for InputError {
    fn from(m: TensorMismatch) -> InputError {
        match m {
            TensorMismatch::Datatype {
                name,
                actual,
                declared,
            } => InputError::Datatype {
                name,
                actual,
                declared,
            },
            TensorMismatch::Shape {
                name,
                actual,
                declared,
            } => InputError::Shape {
                name,
                actual,
                declared,
            },
            TensorMismatch::Bytes { source, .. } => InputError::Bytes(source),
        }
    }
}

/// Checks `inputs` against `declared`; on success returns them in declared order.
pub fn inputs(declared: &[TensorSpec], mut inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InputError> {
    for (i, t) in inputs.iter().enumerate() {
        if inputs[..i].iter().any(|u| u.name == t.name) {
            return Err(InputError::GivenTwice {
                name: t.name.clone(),
            });
        }
        let Some(spec) = declared.iter().find(|d| d.name == t.name) else {
            return Err(InputError::Unknown {
                name: t.name.clone(),
                takes: declared.iter().map(|d| d.name.clone()).collect(),
            });
        };
        spec.check(t)?;
    }
    let mut ordered = Vec::with_capacity(declared.len());
    for spec in declared {
        let Some(at) = inputs.iter().position(|t| t.name == spec.name) else {
            return Err(InputError::Missing {
                name: spec.name.clone(),
                datatype: spec.datatype,
                shape: spec.shape.clone(),
            });
        };
        ordered.push(inputs.swap_remove(at));
    }
    Ok(ordered)
}

/// Synthetic input of the declared shapes (dynamic dimensions as 1), for warmup.
pub fn synthetic(declared: &[TensorSpec]) -> Vec<Tensor> {
    declared
        .iter()
        .map(|spec| {
            let shape: Vec<u64> = spec
                .shape
                .iter()
                .map(|d| if *d > 0 { *d as u64 } else { 1 })
                .collect();
            let count: u64 = shape.iter().product();
            let data = match spec.datatype.element_size() {
                Some(size) => vec![0u8; count as usize * size],
                // BYTES: `count` empty elements (a zero length each).
                None => vec![0u8; count as usize * 4],
            };
            Tensor {
                name: spec.name.clone(),
                datatype: spec.datatype,
                shape,
                data,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<TensorSpec> {
        vec![TensorSpec {
            name: "input".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 4],
        }]
    }

    #[test]
    fn each_problem_is_named() {
        let ok = Tensor::from_f32("input", vec![2, 4], &[0.0; 8]);
        assert_eq!(
            inputs(&declared(), vec![ok.clone()]).unwrap(),
            vec![ok.clone()]
        );

        let wrong_name = Tensor {
            name: "inp".into(),
            ..ok.clone()
        };
        assert_eq!(
            inputs(&declared(), vec![wrong_name])
                .unwrap_err()
                .to_string(),
            "unknown input \"inp\" (the model takes: input)"
        );

        let wrong_type = Tensor {
            datatype: DataType::Fp64,
            ..ok.clone()
        };
        assert_eq!(
            inputs(&declared(), vec![wrong_type])
                .unwrap_err()
                .to_string(),
            "input \"input\" has datatype FP64, the model takes FP32"
        );

        let wrong_shape = Tensor::from_f32("input", vec![2, 5], &[0.0; 10]);
        assert_eq!(
            inputs(&declared(), vec![wrong_shape])
                .unwrap_err()
                .to_string(),
            "input \"input\" has shape [2, 5], the model takes [-1, 4]"
        );

        let mut short = ok.clone();
        short.data.truncate(30);
        assert!(
            inputs(&declared(), vec![short])
                .unwrap_err()
                .to_string()
                .contains("needs 32 bytes, got 30")
        );

        assert_eq!(
            inputs(&declared(), vec![]).unwrap_err().to_string(),
            "missing input \"input\" (FP32 [-1, 4])"
        );
        assert_eq!(
            inputs(&declared(), vec![ok.clone(), ok])
                .unwrap_err()
                .to_string(),
            "input \"input\" is given twice"
        );
    }

    #[test]
    fn synthetic_inputs_pass_their_own_checks() {
        let mut d = declared();
        d.push(TensorSpec {
            name: "s".into(),
            datatype: DataType::Bytes,
            shape: vec![-1, 2],
        });
        let t = synthetic(&d);
        assert_eq!(t[0].shape, vec![1, 4]);
        inputs(&d, t).unwrap();
    }
}
