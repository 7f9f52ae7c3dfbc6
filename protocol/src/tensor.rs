//! Tensors as they cross the process boundary: a name, an Open Inference
//! Protocol datatype, a concrete shape and the raw little-endian bytes.
//!
//! `BYTES` tensors use the layout of the Open Inference Protocol's binary data
//! extension: each element is a 4-byte little-endian length followed by that
//! many bytes, elements back to back.

use std::fmt;
use std::str::FromStr;

use wincode::{SchemaRead, SchemaWrite, containers, len::UseIntLen};

use crate::frame::HARD_MAX_FRAME;

/// Tensor payloads may be as large as a frame. The slice reader checks that the
/// claimed bytes are present before allocating, so this cap is safe to set at
/// the frame ceiling rather than at wincode's default 4 MiB.
pub(crate) type TensorBytes = containers::Vec<u8, UseIntLen<u64, { HARD_MAX_FRAME as usize }>>;

/// The datatypes of the Open Inference Protocol (KServe v2), by their wire names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, SchemaWrite, SchemaRead)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bf16,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bf16,
        DataType::Bytes,
    ];

    /// The Open Inference Protocol name, e.g. `FP32`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bf16 => "BF16",
            DataType::Bytes => "BYTES",
        }
    }

    /// Bytes per element, or `None` for variable-length `BYTES`.
    pub const fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => Some(1),
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 | DataType::Bf16 => Some(2),
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => Some(4),
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => Some(8),
            DataType::Bytes => None,
        }
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown datatype name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown datatype {0:?} (expected one of BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BF16, BYTES)"
)]
pub struct UnknownDataType(pub String);

impl FromStr for DataType {
    type Err = UnknownDataType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DataType::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDataType(s.to_owned()))
    }
}

/// What is wrong with a tensor's bytes relative to its datatype and shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("tensor {name:?}: shape {shape:?} has more elements than can be addressed")]
    ShapeOverflow { name: String, shape: Vec<u64> },
    #[error("tensor {name:?}: shape {shape:?} of {datatype} needs {expected} bytes, got {actual}")]
    ByteLength {
        name: String,
        datatype: DataType,
        shape: Vec<u64>,
        expected: u64,
        actual: u64,
    },
    #[error(
        "tensor {name:?}: BYTES data holds {actual} elements, shape {shape:?} needs {expected}"
    )]
    BytesElements {
        name: String,
        shape: Vec<u64>,
        expected: u64,
        actual: u64,
    },
    #[error("tensor {name:?}: BYTES element {index} is cut short")]
    BytesTruncated { name: String, index: u64 },
}

/// A concrete tensor: every dimension is known.
#[derive(Clone, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<u64>,
    #[wincode(with = "TensorBytes")]
    pub data: Vec<u8>,
}

impl fmt::Debug for Tensor {
    // Tensors can be megabytes: show their metadata, not their bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("name", &self.name)
            .field("datatype", &self.datatype)
            .field("shape", &self.shape)
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl Tensor {
    /// Number of elements the shape describes, or `None` on overflow.
    pub fn element_count(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |n, &d| n.checked_mul(d))
    }

    /// Checks that the bytes are exactly what the datatype and shape require.
    pub fn check(&self) -> Result<(), TensorError> {
        let count = self
            .element_count()
            .ok_or_else(|| TensorError::ShapeOverflow {
                name: self.name.clone(),
                shape: self.shape.clone(),
            })?;
        match self.datatype.element_size() {
            Some(size) => {
                let expected =
                    count
                        .checked_mul(size as u64)
                        .ok_or_else(|| TensorError::ShapeOverflow {
                            name: self.name.clone(),
                            shape: self.shape.clone(),
                        })?;
                let actual = self.data.len() as u64;
                if expected != actual {
                    return Err(TensorError::ByteLength {
                        name: self.name.clone(),
                        datatype: self.datatype,
                        shape: self.shape.clone(),
                        expected,
                        actual,
                    });
                }
            }
            None => {
                let actual = self.bytes_elements()?.count() as u64;
                if actual != count {
                    return Err(TensorError::BytesElements {
                        name: self.name.clone(),
                        shape: self.shape.clone(),
                        expected: count,
                        actual,
                    });
                }
            }
        }
        Ok(())
    }

    /// Iterates over the elements of a `BYTES` tensor, failing on a cut-short element.
    pub fn bytes_elements(&self) -> Result<std::vec::IntoIter<&[u8]>, TensorError> {
        let mut out = Vec::new();
        let mut rest = self.data.as_slice();
        while !rest.is_empty() {
            let truncated = || TensorError::BytesTruncated {
                name: self.name.clone(),
                index: out.len() as u64,
            };
            let (len, tail) = rest.split_first_chunk::<4>().ok_or_else(truncated)?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(truncated());
            }
            let (elem, tail) = tail.split_at(len);
            out.push(elem);
            rest = tail;
        }
        Ok(out.into_iter())
    }

    /// Builds an `FP32` tensor from values.
    pub fn from_f32(name: impl Into<String>, shape: Vec<u64>, values: &[f32]) -> Tensor {
        Tensor {
            name: name.into(),
            datatype: DataType::Fp32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Builds a `BYTES` tensor from elements.
    pub fn from_bytes_elements<'a>(
        name: impl Into<String>,
        shape: Vec<u64>,
        elements: impl IntoIterator<Item = &'a [u8]>,
    ) -> Tensor {
        let mut data = Vec::new();
        for e in elements {
            data.extend_from_slice(&(e.len() as u32).to_le_bytes());
            data.extend_from_slice(e);
        }
        Tensor {
            name: name.into(),
            datatype: DataType::Bytes,
            shape,
            data,
        }
    }

    /// Reads an `FP32` tensor's values; `None` for another datatype or a ragged length.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        if self.datatype != DataType::Fp32 || !self.data.len().is_multiple_of(4) {
            return None;
        }
        Some(
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        )
    }
}

/// A tensor's declared signature: `-1` marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq, Eq, SchemaWrite, SchemaRead)]
pub struct TensorInfo {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(d.as_str().parse::<DataType>(), Ok(d));
        }
        assert!("fp32".parse::<DataType>().is_err());
        assert!("FLOAT".parse::<DataType>().is_err());
    }

    #[test]
    fn check_accepts_exact_bytes_and_names_the_problem_otherwise() {
        let t = Tensor::from_f32("x", vec![2, 3], &[0.0; 6]);
        assert_eq!(t.check(), Ok(()));
        let mut short = t.clone();
        short.data.pop();
        assert_eq!(
            short.check(),
            Err(TensorError::ByteLength {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![2, 3],
                expected: 24,
                actual: 23,
            })
        );
        let huge = Tensor {
            shape: vec![u64::MAX, 2],
            ..t
        };
        assert!(matches!(
            huge.check(),
            Err(TensorError::ShapeOverflow { .. })
        ));
    }

    #[test]
    fn bytes_tensors_count_elements() {
        let t = Tensor::from_bytes_elements("s", vec![2], [b"ab".as_slice(), b"".as_slice()]);
        assert_eq!(t.check(), Ok(()));
        let elems: Vec<_> = t.bytes_elements().unwrap().collect();
        assert_eq!(elems, vec![b"ab".as_slice(), b"".as_slice()]);
        let wrong = Tensor {
            shape: vec![3],
            ..t.clone()
        };
        assert!(matches!(
            wrong.check(),
            Err(TensorError::BytesElements { .. })
        ));
        let mut cut = t;
        cut.data.truncate(5);
        assert!(matches!(
            cut.check(),
            Err(TensorError::BytesTruncated { .. })
        ));
    }
}
