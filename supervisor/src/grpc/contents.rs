//! Tensors between gRPC messages and ward's: the Open Inference Protocol's
//! typed `contents` (one repeated field per datatype) or raw bytes
//! (little-endian, row-major; BYTES elements each behind a 4-byte
//! little-endian length, as ward's protocol keeps them).

use bytes::Bytes;
use ward_protocol::{DataType, Tensor};

use crate::api::ApiError;
use crate::grpc::proto::inference::InferTensorContents;
use crate::grpc::proto::inference::model_infer_request::InferInputTensor;

/// A tensor from its parts, its bytes checked against datatype and shape.
pub fn tensor(
    name: String,
    datatype: &str,
    shape: &[i64],
    data: Vec<u8>,
) -> Result<Tensor, ApiError> {
    let datatype: DataType = datatype
        .parse()
        .map_err(|e: ward_protocol::UnknownDataType| {
            ApiError::bad_request(format!("input {name:?}: {e}"))
        })?;
    let shape = shape
        .iter()
        .map(|&d| u64::try_from(d))
        .collect::<Result<Vec<u64>, _>>()
        .map_err(|_| {
            ApiError::bad_request(format!(
                "input {name:?}: shape {shape:?} has a negative dimension"
            ))
        })?;
    let t = Tensor {
        name,
        datatype,
        shape,
        data,
    };
    t.check()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(t)
}

/// An input of a `ModelInferRequest`: its raw contents when the request
/// carries them, else its typed contents.
pub fn input(t: InferInputTensor, raw: Option<Bytes>) -> Result<Tensor, ApiError> {
    let data = match (raw, t.contents) {
        (Some(_), Some(c)) if c != InferTensorContents::default() => {
            return Err(ApiError::bad_request(format!(
                "input {:?} has both contents and raw_input_contents",
                t.name
            )));
        }
        (Some(raw), _) => raw.to_vec(),
        (None, contents) => {
            let datatype: DataType =
                t.datatype
                    .parse()
                    .map_err(|e: ward_protocol::UnknownDataType| {
                        ApiError::bad_request(format!("input {:?}: {e}", t.name))
                    })?;
            typed_bytes(datatype, contents.unwrap_or_default())
                .map_err(|why| ApiError::bad_request(format!("input {:?}: {why}", t.name)))?
        }
    };
    tensor(t.name, &t.datatype, &t.shape, data)
}

/// Narrows each value into `T`, or names the first that does not fit.
fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
    values: Vec<S>,
    datatype: DataType,
    le: impl Fn(T) -> Vec<u8>,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(values.len() * datatype.element_size().unwrap_or(1));
    for v in values {
        let t = T::try_from(v).map_err(|_| format!("{v} does not fit {datatype}"))?;
        out.extend(le(t));
    }
    Ok(out)
}

/// The bytes of typed contents, from the field that the datatype reads.
fn typed_bytes(datatype: DataType, c: InferTensorContents) -> Result<Vec<u8>, String> {
    fn flat<T, const N: usize>(values: Vec<T>, le: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        values.into_iter().flat_map(le).collect()
    }
    Ok(match datatype {
        DataType::Bool => c.bool_contents.into_iter().map(u8::from).collect(),
        DataType::Int8 => narrow(c.int_contents, datatype, |v: i8| v.to_le_bytes().to_vec())?,
        DataType::Int16 => narrow(c.int_contents, datatype, |v: i16| v.to_le_bytes().to_vec())?,
        DataType::Int32 => flat(c.int_contents, i32::to_le_bytes),
        DataType::Int64 => flat(c.int64_contents, i64::to_le_bytes),
        DataType::Uint8 => narrow(c.uint_contents, datatype, |v: u8| vec![v])?,
        DataType::Uint16 => narrow(c.uint_contents, datatype, |v: u16| v.to_le_bytes().to_vec())?,
        DataType::Uint32 => flat(c.uint_contents, u32::to_le_bytes),
        DataType::Uint64 => flat(c.uint64_contents, u64::to_le_bytes),
        DataType::Fp32 => flat(c.fp32_contents, f32::to_le_bytes),
        DataType::Fp64 => flat(c.fp64_contents, f64::to_le_bytes),
        DataType::Bytes => {
            let elements: Vec<&[u8]> = c.bytes_contents.iter().map(|b| b.as_ref()).collect();
            Tensor::from_bytes_elements("", Vec::new(), elements).data
        }
        DataType::Fp16 | DataType::Bf16 => {
            return Err(format!("{datatype} travels only as raw_input_contents"));
        }
    })
}

/// A tensor's elements as typed contents; `None` for FP16 and BF16, which
/// have no typed field (they travel raw).
pub fn contents_of(t: &Tensor) -> Option<InferTensorContents> {
    fn read<const N: usize, T>(data: &[u8], from: impl Fn([u8; N]) -> T) -> Vec<T> {
        data.chunks_exact(N)
            .map(|c| from(c.try_into().unwrap_or([0; N])))
            .collect()
    }
    let d = &t.data;
    let mut c = InferTensorContents::default();
    match t.datatype {
        DataType::Bool => c.bool_contents = d.iter().map(|&b| b != 0).collect(),
        DataType::Int8 => c.int_contents = d.iter().map(|&b| i32::from(b as i8)).collect(),
        DataType::Int16 => c.int_contents = read(d, |b| i32::from(i16::from_le_bytes(b))),
        DataType::Int32 => c.int_contents = read(d, i32::from_le_bytes),
        DataType::Int64 => c.int64_contents = read(d, i64::from_le_bytes),
        DataType::Uint8 => c.uint_contents = d.iter().map(|&b| u32::from(b)).collect(),
        DataType::Uint16 => c.uint_contents = read(d, |b| u32::from(u16::from_le_bytes(b))),
        DataType::Uint32 => c.uint_contents = read(d, u32::from_le_bytes),
        DataType::Uint64 => c.uint64_contents = read(d, u64::from_le_bytes),
        DataType::Fp32 => c.fp32_contents = read(d, f32::from_le_bytes),
        DataType::Fp64 => c.fp64_contents = read(d, f64::from_le_bytes),
        DataType::Bytes => {
            c.bytes_contents = t
                .bytes_elements()
                .ok()?
                .map(Bytes::copy_from_slice)
                .collect();
        }
        DataType::Fp16 | DataType::Bf16 => return None,
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(datatype: &str, shape: Vec<i64>, c: InferTensorContents) -> Result<Tensor, ApiError> {
        input(
            InferInputTensor {
                name: "x".into(),
                datatype: datatype.into(),
                shape,
                parameters: Default::default(),
                contents: Some(c),
            },
            None,
        )
    }

    #[test]
    fn typed_contents_round_trip_through_ward_tensors() {
        let cases = [
            (
                "FP32",
                InferTensorContents {
                    fp32_contents: vec![1.5, -2.0],
                    ..Default::default()
                },
            ),
            (
                "FP64",
                InferTensorContents {
                    fp64_contents: vec![1e300, 0.25],
                    ..Default::default()
                },
            ),
            (
                "INT8",
                InferTensorContents {
                    int_contents: vec![-128, 127],
                    ..Default::default()
                },
            ),
            (
                "INT16",
                InferTensorContents {
                    int_contents: vec![-300, 300],
                    ..Default::default()
                },
            ),
            (
                "INT32",
                InferTensorContents {
                    int_contents: vec![i32::MIN, 7],
                    ..Default::default()
                },
            ),
            (
                "INT64",
                InferTensorContents {
                    int64_contents: vec![i64::MAX, -1],
                    ..Default::default()
                },
            ),
            (
                "UINT8",
                InferTensorContents {
                    uint_contents: vec![0, 255],
                    ..Default::default()
                },
            ),
            (
                "UINT16",
                InferTensorContents {
                    uint_contents: vec![65535, 1],
                    ..Default::default()
                },
            ),
            (
                "UINT32",
                InferTensorContents {
                    uint_contents: vec![u32::MAX, 2],
                    ..Default::default()
                },
            ),
            (
                "UINT64",
                InferTensorContents {
                    uint64_contents: vec![u64::MAX, 3],
                    ..Default::default()
                },
            ),
            (
                "BOOL",
                InferTensorContents {
                    bool_contents: vec![true, false],
                    ..Default::default()
                },
            ),
            (
                "BYTES",
                InferTensorContents {
                    bytes_contents: vec![Bytes::from_static(b"ab"), Bytes::from_static(b"")],
                    ..Default::default()
                },
            ),
        ];
        for (datatype, c) in cases {
            let t = typed(datatype, vec![2], c.clone()).unwrap();
            assert_eq!(contents_of(&t), Some(c), "{datatype}");
        }
    }

    #[test]
    fn bad_contents_are_invalid_input_naming_why() {
        let why = |r: Result<Tensor, ApiError>| r.unwrap_err().message;
        let fp32 = InferTensorContents {
            fp32_contents: vec![1.0],
            ..Default::default()
        };
        assert!(why(typed("FP32", vec![2], fp32.clone())).contains("needs 8 bytes, got 4"));
        assert!(why(typed("FP32", vec![-1], fp32.clone())).contains("negative"));
        assert!(why(typed("FP99", vec![1], fp32.clone())).contains("unknown datatype"));
        let big = InferTensorContents {
            int_contents: vec![128],
            ..Default::default()
        };
        assert!(why(typed("INT8", vec![1], big)).contains("128 does not fit INT8"));
        assert!(why(typed("FP16", vec![1], fp32.clone())).contains("only as raw"));
        let both = input(
            InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1],
                parameters: Default::default(),
                contents: Some(fp32),
            },
            Some(Bytes::from_static(&[0, 0, 0, 0])),
        );
        assert!(why(both).contains("both"));
    }
}
