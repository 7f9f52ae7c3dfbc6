//! The one check of a concrete tensor against its declaration, used by the
//! worker for inputs and by the supervisor for a worker's (untrusted) outputs.

use thiserror::Error;
use ward_protocol::{DataType, Tensor, TensorError};

use crate::TensorSpec;

/// Why a tensor does not fit its declaration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TensorMismatch {
    #[error("{name:?} has datatype {actual}, declared {declared}")]
    Datatype {
        name: String,
        actual: DataType,
        declared: DataType,
    },
    #[error("{name:?} has shape {actual:?}, declared {}", fmt_shape(declared))]
    Shape {
        name: String,
        actual: Vec<u64>,
        declared: Vec<i64>,
    },
    #[error("{name:?}: {source}")]
    Bytes {
        name: String,
        #[source]
        source: TensorError,
    },
}

/// Whether a concrete shape fits a declared one (`-1` matches any size).
pub fn shape_fits(declared: &[i64], actual: &[u64]) -> bool {
    declared.len() == actual.len()
        && declared
            .iter()
            .zip(actual)
            .all(|(d, a)| *d == -1 || u64::try_from(*d) == Ok(*a))
}

/// A declared shape as model.yaml writes it: `[-1, 64]`.
pub fn fmt_shape(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(", "))
}

impl TensorSpec {
    /// Checks datatype, shape and byte length of `t` against this declaration
    /// (the names are the caller's to match).
    pub fn check(&self, t: &Tensor) -> Result<(), TensorMismatch> {
        if t.datatype != self.datatype {
            return Err(TensorMismatch::Datatype {
                name: t.name.clone(),
                actual: t.datatype,
                declared: self.datatype,
            });
        }
        if !shape_fits(&self.shape, &t.shape) {
            return Err(TensorMismatch::Shape {
                name: t.name.clone(),
                actual: t.shape.clone(),
                declared: self.shape.clone(),
            });
        }
        t.check().map_err(|source| TensorMismatch::Bytes {
            name: t.name.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TensorSpec {
        TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 2],
        }
    }

    fn tensor(datatype: DataType, shape: Vec<u64>, bytes: usize) -> Tensor {
        Tensor {
            name: "x".into(),
            datatype,
            shape,
            data: vec![0; bytes],
        }
    }

    #[test]
    fn a_fitting_tensor_passes() {
        assert_eq!(
            spec().check(&tensor(DataType::Fp32, vec![3, 2], 24)),
            Ok(())
        );
    }

    #[test]
    fn each_mismatch_is_named() {
        let e = spec()
            .check(&tensor(DataType::Int64, vec![3, 2], 48))
            .unwrap_err();
        assert!(matches!(e, TensorMismatch::Datatype { .. }), "{e}");
        assert_eq!(e.to_string(), "\"x\" has datatype INT64, declared FP32");
        let e = spec()
            .check(&tensor(DataType::Fp32, vec![3, 3], 36))
            .unwrap_err();
        assert_eq!(e.to_string(), "\"x\" has shape [3, 3], declared [-1, 2]");
        let e = spec()
            .check(&tensor(DataType::Fp32, vec![2], 8))
            .unwrap_err();
        assert!(matches!(e, TensorMismatch::Shape { .. }), "{e}");
        let e = spec()
            .check(&tensor(DataType::Fp32, vec![3, 2], 23))
            .unwrap_err();
        assert!(matches!(e, TensorMismatch::Bytes { .. }), "{e}");
    }

    #[test]
    fn shapes_fit_only_where_declared() {
        assert!(shape_fits(&[-1, 64], &[5, 64]));
        assert!(!shape_fits(&[-1, 64], &[5, 63]));
        assert!(!shape_fits(&[64], &[1, 64]));
        assert_eq!(fmt_shape(&[-1, 3, 64]), "[-1, 3, 64]");
    }
}
