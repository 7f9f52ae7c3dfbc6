//! Tensors in the Open Inference Protocol's JSON form: `data` flat or nested,
//! decoded without building a generic JSON tree (a tree for an 85 KB body
//! costs more than the inference it feeds) and turned into raw little-endian
//! bytes for the worker.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::{Value, json};
use ward_protocol::{DataType, Tensor, TensorError, UnknownDataType};

/// One element of `data`, as JSON gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
}

/// `data`, flattened in row-major order however deeply it was nested.
#[derive(Debug, Default, PartialEq)]
pub struct FlatData(pub Vec<Scalar>);

/// Nesting deeper than any tensor rank is an attack, not a tensor.
const MAX_DEPTH: usize = 16;

struct FlatVisitor<'a> {
    out: &'a mut Vec<Scalar>,
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for FlatVisitor<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FlatVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor data: numbers, booleans or strings, in a flat or nested list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "data nested more than {MAX_DEPTH} levels deep"
            )));
        }
        while seq
            .next_element_seed(FlatVisitor {
                out: &mut *self.out,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.out.push(Scalar::Int(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.out.push(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::UInt(v),
        });
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.out.push(Scalar::Float(v));
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out.push(Scalar::Bool(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.out.push(Scalar::Str(v.to_owned()));
        Ok(())
    }
    fn visit_string<E>(self, v: String) -> Result<(), E> {
        self.out.push(Scalar::Str(v));
        Ok(())
    }
}

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FlatData, D::Error> {
        let mut out = Vec::new();
        d.deserialize_any(FlatVisitor {
            out: &mut out,
            depth: 0,
        })?;
        Ok(FlatData(out))
    }
}

/// The `data` of an input, as decoded.
#[derive(Debug, PartialEq)]
pub enum InputData {
    /// Decoded straight into little-endian bytes (the datatype came first),
    /// with the element count.
    Raw { bytes: Vec<u8>, count: u64 },
    /// Decoded before the datatype was known: converted afterwards.
    Scalars(Vec<Scalar>),
}

/// One input tensor of a request.
#[derive(Debug)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub datatype: String,
    pub parameters: Option<serde_json::Map<String, Value>>,
    pub data: Option<InputData>,
}

const INPUT_FIELDS: &[&str] = &["name", "shape", "datatype", "parameters", "data"];

impl<'de> Deserialize<'de> for InputTensor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<InputTensor, D::Error> {
        d.deserialize_map(InputVisitor)
    }
}

struct InputVisitor;

impl<'de> Visitor<'de> for InputVisitor {
    type Value = InputTensor;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an input tensor {name, shape, datatype, data}")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<InputTensor, A::Error> {
        let (mut name, mut shape, mut datatype, mut parameters, mut data) =
            (None, None, None, None, None);
        // A key twice is refused, as the derived decoders do: a second
        // `datatype` after `data` would relabel bytes decoded for the first.
        let mut seen = [false; INPUT_FIELDS.len()];
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if let Some(i) = INPUT_FIELDS.iter().position(|f| *f == key.as_ref())
                && std::mem::replace(&mut seen[i], true)
            {
                return Err(de::Error::duplicate_field(INPUT_FIELDS[i]));
            }
            match key.as_ref() {
                "name" => name = Some(map.next_value::<String>()?),
                "shape" => shape = Some(map.next_value::<Vec<u64>>()?),
                "datatype" => datatype = Some(map.next_value::<String>()?),
                "parameters" => parameters = map.next_value()?,
                "data" => {
                    let typed = datatype
                        .as_deref()
                        .and_then(|d: &str| d.parse::<DataType>().ok());
                    data = Some(match typed {
                        Some(dt) => {
                            let mut bytes = Vec::new();
                            let mut count = 0u64;
                            map.next_value_seed(TypedSeed {
                                datatype: dt,
                                out: &mut bytes,
                                count: &mut count,
                                depth: 0,
                            })?;
                            InputData::Raw { bytes, count }
                        }
                        None => InputData::Scalars(map.next_value::<FlatData>()?.0),
                    });
                }
                other => return Err(de::Error::unknown_field(other, INPUT_FIELDS)),
            }
        }
        Ok(InputTensor {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            parameters,
            data,
        })
    }
}

/// Decodes (nested) `data` of a known datatype straight into bytes.
struct TypedSeed<'a> {
    datatype: DataType,
    out: &'a mut Vec<u8>,
    count: &'a mut u64,
    depth: usize,
}

impl<'de> de::DeserializeSeed<'de> for TypedSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl TypedSeed<'_> {
    fn push<E: de::Error>(self, s: Scalar) -> Result<(), E> {
        let at = *self.count;
        let dt = self.datatype;
        encode_one(dt, &s, self.out)
            .map_err(|what| E::custom(format!("{dt} element {at} is not {what}")))?;
        *self.count += 1;
        Ok(())
    }
}

impl<'de> Visitor<'de> for TypedSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} tensor data in a flat or nested list", self.datatype)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "data nested more than {MAX_DEPTH} levels deep"
            )));
        }
        if self.depth == 0 {
            let hint = seq.size_hint().unwrap_or(0).min(1 << 20);
            self.out
                .reserve(hint * self.datatype.element_size().unwrap_or(8));
        }
        let TypedSeed {
            datatype,
            out,
            count,
            depth,
        } = self;
        while seq
            .next_element_seed(TypedSeed {
                datatype,
                out: &mut *out,
                count: &mut *count,
                depth: depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(match i64::try_from(v) {
            Ok(i) => Scalar::Int(i),
            Err(_) => Scalar::UInt(v),
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(Scalar::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(Scalar::Bool(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(Scalar::Str(v.to_owned()))
    }
}

/// Why an input tensor of a request cannot be used (a 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("input {name:?}: {reason}")]
    Datatype {
        name: String,
        reason: UnknownDataType,
    },
    #[error("input {name:?}: shape {shape:?} is too large")]
    ShapeTooLarge { name: String, shape: Vec<u64> },
    #[error("input {name:?} has no data")]
    NoData { name: String },
    #[error("input {name:?}: shape {shape:?} needs {need} elements, data has {got}")]
    ElementCount {
        name: String,
        shape: Vec<u64>,
        need: u64,
        got: u64,
    },
    #[error("input {name:?}: element {index} is not {expected}")]
    Element {
        name: String,
        index: usize,
        expected: &'static str,
    },
    #[error("input {name:?}: parameters.binary_data_size must be a whole number")]
    BinarySize { name: String },
    #[error("input {name:?} has both data and binary_data_size")]
    DataAndBinary { name: String },
    #[error("input {0}")]
    Bytes(TensorError),
}

impl InputTensor {
    /// Converts to raw bytes, naming the exact problem on failure.
    pub fn into_tensor(self) -> Result<Tensor, InputError> {
        let name = self.name;
        let datatype: DataType = self
            .datatype
            .parse()
            .map_err(|reason| InputError::Datatype {
                name: name.clone(),
                reason,
            })?;
        let count = self
            .shape
            .iter()
            .try_fold(1u64, |n, d| n.checked_mul(*d))
            .ok_or_else(|| InputError::ShapeTooLarge {
                name: name.clone(),
                shape: self.shape.clone(),
            })?;
        let (bytes, got) = match self
            .data
            .ok_or_else(|| InputError::NoData { name: name.clone() })?
        {
            InputData::Raw { bytes, count } => (bytes, count),
            InputData::Scalars(data) => {
                let n = data.len() as u64;
                (encode(&name, datatype, &data)?, n)
            }
        };
        if got != count {
            return Err(InputError::ElementCount {
                name,
                shape: self.shape,
                need: count,
                got,
            });
        }
        Ok(Tensor {
            name,
            datatype,
            shape: self.shape,
            data: bytes,
        })
    }

    /// An input whose bytes came in the binary extension's body.
    pub fn binary_size(&self) -> Option<Result<usize, InputError>> {
        let v = self.parameters.as_ref()?.get("binary_data_size")?;
        Some(
            v.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| InputError::BinarySize {
                    name: self.name.clone(),
                }),
        )
    }

    /// Builds the tensor from raw bytes of the binary extension.
    pub fn into_binary_tensor(self, bytes: Vec<u8>) -> Result<Tensor, InputError> {
        if self.data.is_some() {
            return Err(InputError::DataAndBinary { name: self.name });
        }
        let datatype: DataType = self
            .datatype
            .parse()
            .map_err(|reason| InputError::Datatype {
                name: self.name.clone(),
                reason,
            })?;
        let t = Tensor {
            name: self.name,
            datatype,
            shape: self.shape,
            data: bytes,
        };
        t.check().map_err(InputError::Bytes)?;
        Ok(t)
    }
}

/// Appends one element's bytes; the error says what the element should have been.
fn encode_one(datatype: DataType, s: &Scalar, out: &mut Vec<u8>) -> Result<(), &'static str> {
    fn int<T: TryFrom<i64> + TryFrom<u64>>(s: &Scalar) -> Result<T, &'static str> {
        match s {
            Scalar::Int(v) => T::try_from(*v).map_err(|_| "an integer in range"),
            Scalar::UInt(v) => T::try_from(*v).map_err(|_| "an integer in range"),
            _ => Err("an integer"),
        }
    }
    let float = |s: &Scalar| -> Result<f64, &'static str> {
        match s {
            Scalar::Float(v) => Ok(*v),
            Scalar::Int(v) => Ok(*v as f64),
            Scalar::UInt(v) => Ok(*v as f64),
            _ => Err("a number"),
        }
    };
    match datatype {
        DataType::Bool => match s {
            Scalar::Bool(b) => out.push(u8::from(*b)),
            _ => return Err("a boolean"),
        },
        DataType::Uint8 => out.push(int::<u8>(s)?),
        DataType::Uint16 => out.extend_from_slice(&int::<u16>(s)?.to_le_bytes()),
        DataType::Uint32 => out.extend_from_slice(&int::<u32>(s)?.to_le_bytes()),
        DataType::Uint64 => out.extend_from_slice(&int::<u64>(s)?.to_le_bytes()),
        DataType::Int8 => out.extend_from_slice(&int::<i8>(s)?.to_le_bytes()),
        DataType::Int16 => out.extend_from_slice(&int::<i16>(s)?.to_le_bytes()),
        DataType::Int32 => out.extend_from_slice(&int::<i32>(s)?.to_le_bytes()),
        DataType::Int64 => out.extend_from_slice(&int::<i64>(s)?.to_le_bytes()),
        DataType::Fp32 => out.extend_from_slice(&(float(s)? as f32).to_le_bytes()),
        DataType::Fp64 => out.extend_from_slice(&float(s)?.to_le_bytes()),
        DataType::Fp16 => out.extend_from_slice(&f32_to_f16(float(s)? as f32).to_le_bytes()),
        DataType::Bf16 => out.extend_from_slice(&f32_to_bf16(float(s)? as f32).to_le_bytes()),
        DataType::Bytes => {
            let Scalar::Str(text) = s else {
                return Err("a string");
            };
            let len = u32::try_from(text.len()).map_err(|_| "a string under 4 GiB")?;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    Ok(())
}

fn encode(name: &str, datatype: DataType, data: &[Scalar]) -> Result<Vec<u8>, InputError> {
    let mut out = Vec::with_capacity(data.len() * datatype.element_size().unwrap_or(8));
    for (i, s) in data.iter().enumerate() {
        encode_one(datatype, s, &mut out).map_err(|expected| InputError::Element {
            name: name.to_owned(),
            index: i,
            expected,
        })?;
    }
    Ok(out)
}

/// IEEE 754 half from single, round to nearest even.
pub fn f32_to_f16(v: f32) -> u16 {
    let x = v.to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let exp = ((x >> 23) & 0xff) as i32;
    let man = x & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let mid = 1 << (shift - 1);
        let round = u32::from(rem > mid || (rem == mid && (half & 1) == 1));
        return sign | (half + round) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    let round = u32::from(rem > 0x1000 || (rem == 0x1000 && (half & 1) == 1));
    sign | (half + round) as u16
}

pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

pub fn f32_to_bf16(v: f32) -> u16 {
    let x = v.to_bits();
    if v.is_nan() {
        return ((x >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((x >> 16) & 1);
    (x.wrapping_add(round) >> 16) as u16
}

/// An output tensor as KServe v2 JSON: `{name, datatype, shape, data}`.
pub fn output_json(t: &Tensor) -> Value {
    let d = &t.data;
    let data: Value = match t.datatype {
        DataType::Bool => d.iter().map(|b| *b != 0).collect(),
        DataType::Uint8 => d.iter().copied().collect(),
        DataType::Int8 => d.iter().map(|b| *b as i8).collect(),
        DataType::Uint16 => d
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect(),
        DataType::Int16 => d
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect(),
        DataType::Uint32 => d
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DataType::Int32 => d
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DataType::Uint64 => d
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        DataType::Int64 => d
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect(),
        DataType::Fp32 => d
            .chunks_exact(4)
            .map(|c| finite(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64))
            .collect(),
        DataType::Fp64 => d
            .chunks_exact(8)
            .map(|c| finite(f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))))
            .collect(),
        DataType::Fp16 => d
            .chunks_exact(2)
            .map(|c| finite(f16_to_f32(u16::from_le_bytes([c[0], c[1]])) as f64))
            .collect(),
        DataType::Bf16 => d
            .chunks_exact(2)
            .map(|c| {
                finite(f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16) as f64)
            })
            .collect(),
        DataType::Bytes => t
            .bytes_elements()
            .map(|it| {
                it.map(|e| Value::String(String::from_utf8_lossy(e).into_owned()))
                    .collect()
            })
            .unwrap_or(Value::Array(Vec::new())),
    };
    json!({ "name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape, "data": data })
}

/// JSON has no NaN or infinity: they become null.
fn finite(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(json: &str) -> Result<Tensor, String> {
        serde_json::from_str::<InputTensor>(json)
            .map_err(|e| e.to_string())?
            .into_tensor()
            .map_err(|e| e.to_string())
    }

    #[test]
    fn flat_and_nested_data_are_the_same_tensor() {
        let flat =
            input(r#"{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3.5,4]}"#).unwrap();
        let nested =
            input(r#"{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3.5,4]]}"#)
                .unwrap();
        assert_eq!(flat, nested);
        assert_eq!(flat.to_f32().unwrap(), vec![1.0, 2.0, 3.5, 4.0]);
    }

    #[test]
    fn every_datatype_round_trips_through_json() {
        let cases = [
            ("BOOL", "[true,false]"),
            ("UINT8", "[0,255]"),
            ("UINT16", "[0,65535]"),
            ("UINT32", "[0,4294967295]"),
            ("UINT64", "[0,18446744073709551615]"),
            ("INT8", "[-128,127]"),
            ("INT16", "[-32768,32767]"),
            ("INT32", "[-2147483648,2147483647]"),
            ("INT64", "[-9223372036854775808,9223372036854775807]"),
            ("FP16", "[1.5,-2.0]"),
            ("FP32", "[1.5,-2.25]"),
            ("FP64", "[1.5,-2.125]"),
            ("BF16", "[1.5,-2.0]"),
            ("BYTES", r#"["ab","é"]"#),
        ];
        for (dt, data) in cases {
            let t = input(&format!(
                r#"{{"name":"x","shape":[2],"datatype":"{dt}","data":{data}}}"#
            ))
            .unwrap();
            t.check().unwrap();
            let back = output_json(&t);
            let expected: Value = serde_json::from_str(data).unwrap();
            assert_eq!(back["data"], expected, "{dt}");
        }
    }

    #[test]
    fn problems_are_named() {
        let cases = [
            (
                r#"{"name":"x","shape":[3],"datatype":"FP32","data":[1,2]}"#,
                "needs 3 elements, data has 2",
            ),
            (
                r#"{"name":"x","shape":[1],"datatype":"INT8","data":[300]}"#,
                "element 0 is not an integer in range",
            ),
            (
                r#"{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}"#,
                "element 0 is not a number",
            ),
            (
                r#"{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}"#,
                "unknown datatype \"FLOAT\"",
            ),
            (
                r#"{"name":"x","shape":[1],"datatype":"FP32"}"#,
                "has no data",
            ),
            (
                r#"{"name":"x","shape":[1],"datatype":"FP32","data":[1],"bogus":1}"#,
                "unknown field `bogus`",
            ),
        ];
        for (json, needle) in cases {
            let err = input(json).unwrap_err();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
        let deep = format!(
            r#"{{"name":"x","shape":[1],"datatype":"FP32","data":{}1{}}}"#,
            "[".repeat(40),
            "]".repeat(40)
        );
        assert!(input(&deep).unwrap_err().contains("nested more than"));
    }

    #[test]
    fn half_precision_conversions() {
        for v in [0.0f32, 1.0, -2.5, 65504.0, 6.1e-5, 1e-7] {
            let back = f16_to_f32(f32_to_f16(v));
            assert!((back - v).abs() <= v.abs() * 1e-3 + 6e-8, "{v} -> {back}");
        }
        assert_eq!(f32_to_f16(1e6), 0x7c00, "overflow is infinity");
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
    }
}
