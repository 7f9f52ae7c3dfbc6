//! Arbitrary bytes as an Open Inference Protocol infer request: the JSON
//! tensor decoder (`supervisor/src/api/tensor_json.rs`) and the binary data
//! extension's body split, through the public
//! `ward_supervisor::api::infer::decode_request(headers, body)` the infer
//! route calls.
//!
//! The first byte picks how the rest becomes a request, so that JSON-only and
//! binary bodies are both reachable with short inputs:
//! - `0`: no `Inference-Header-Content-Length`; the rest is the JSON body.
//! - `1`: the rest is split at its first NUL byte into a JSON header and a
//!   binary tail (the NUL is dropped); the header value is the JSON's length,
//!   as a well-behaved client sends it.
//! - `2`: the next two bytes are the header value (little-endian `u16`, sent
//!   as decimal); the rest is the body, so the announced length can be short,
//!   exact or past the end.
//! - `3`: the bytes up to the first newline are the header value verbatim
//!   (signs, spaces, non-digits, huge numbers); the rest is the body.
//!
//! Invariants:
//! - nothing panics (and no allocation runs away: libFuzzer's RSS limit);
//! - a rejection is a 400 `INVALID_INPUT` with a message;
//! - on `Ok`, the JSON header is a JSON object whose `inputs` array has as
//!   many entries as there are tensors, in order, each tensor having the
//!   entry's `name`, `datatype` and `shape` (as a plain JSON parser reads
//!   them; with duplicate keys, the last one wins for both);
//! - on `Ok`, every tensor passes `Tensor::check()` (its bytes are exactly
//!   what its datatype and shape need), so nothing malformed reaches a worker;
//! - on `Ok`, the inputs that declare `binary_data_size` took exactly the
//!   binary tail, in order and without overlap;
//! - a tensor decoded from JSON `data` whose datatype is not floating point
//!   re-encodes through `output_json` (ward's answer format) and decodes back
//!   to an equal tensor.
#![no_main]

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use ward_protocol::{DataType, Tensor};
use ward_supervisor::api::infer::decode_request;
use ward_supervisor::api::tensor_json::{InputTensor, output_json};
use ward_supervisor::errors::ErrorCode;

const HEADER: &str = "inference-header-content-length";

/// The request a fuzz input stands for: the header value, if any, and the body.
fn request(data: &[u8]) -> Option<(Option<HeaderValue>, Vec<u8>)> {
    let (&mode, rest) = data.split_first()?;
    match mode % 4 {
        0 => Some((None, rest.to_vec())),
        1 => {
            let (json, binary) = match rest.iter().position(|&b| b == 0) {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &[][..]),
            };
            let mut body = json.to_vec();
            body.extend_from_slice(binary);
            Some((Some(HeaderValue::from(json.len())), body))
        }
        2 => {
            let (len, body) = rest.split_first_chunk::<2>()?;
            Some((
                Some(HeaderValue::from(u16::from_le_bytes(*len))),
                body.to_vec(),
            ))
        }
        _ => {
            let at = rest.iter().position(|&b| b == b'\n')?;
            // A value no HTTP server would pass on is not worth a run.
            let value = HeaderValue::from_bytes(&rest[..at]).ok()?;
            Some((Some(value), rest[at + 1..].to_vec()))
        }
    }
}

fn is_float(dt: DataType) -> bool {
    matches!(
        dt,
        DataType::Fp16 | DataType::Fp32 | DataType::Fp64 | DataType::Bf16
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((value, body)) = request(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    if let Some(v) = &value {
        headers.insert(HEADER, v.clone());
    }
    let body = Bytes::from(body);

    let (_req, tensors) = match decode_request(&headers, &body) {
        Ok(ok) => ok,
        Err(e) => {
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
            assert_eq!(e.code, ErrorCode::InvalidInput, "{e:?}");
            assert!(!e.message.is_empty(), "{e:?}");
            return;
        }
    };

    // Accepted: the header value was a length within the body.
    let header_len = match &value {
        None => body.len(),
        Some(v) => {
            let n: usize = v
                .to_str()
                .expect("an accepted header is text")
                .trim()
                .parse()
                .expect("an accepted header is a whole number");
            assert!(
                n <= body.len(),
                "header {n} past a {}-byte body",
                body.len()
            );
            n
        }
    };
    let (json, binary) = body.split_at(header_len);
    let doc: Value = serde_json::from_slice(json).expect("an accepted header is JSON");
    let inputs = doc["inputs"]
        .as_array()
        .expect("an accepted request has inputs");
    assert_eq!(tensors.len(), inputs.len(), "one tensor per input");

    let mut tail = binary;
    for (t, input) in tensors.iter().zip(inputs) {
        if let Err(e) = t.check() {
            panic!("decoded tensor fails check: {e}\ninput: {input}\ntensor: {t:?}");
        }
        assert_eq!(input["name"].as_str(), Some(t.name.as_str()), "{input}");
        assert_eq!(
            input["datatype"].as_str(),
            Some(t.datatype.as_str()),
            "{input}"
        );
        let shape: Vec<u64> = input["shape"]
            .as_array()
            .expect("an accepted input has a shape")
            .iter()
            .map(|d| d.as_u64().expect("an accepted dimension is a u64"))
            .collect();
        assert_eq!(shape, t.shape, "{input}");

        match input["parameters"].get("binary_data_size") {
            Some(size) => {
                let size = size.as_u64().expect("an accepted binary_data_size") as usize;
                assert_eq!(t.data.len(), size, "{input}");
                let (mine, rest) = tail.split_at(size);
                assert_eq!(mine, t.data.as_slice(), "binary bytes taken in order");
                tail = rest;
            }
            None if !is_float(t.datatype) => {
                let echoed = output_json(t);
                let back: InputTensor =
                    serde_json::from_value(echoed.clone()).expect("output_json decodes");
                let back: Tensor = back.into_tensor().expect("output_json is a valid input");
                assert_eq!(&back, t, "re-encoded as {echoed}");
            }
            None => {}
        }
    }
    assert!(tail.is_empty(), "binary tail left over after an Ok");
});
