//! Classifier postprocessing: turns a score tensor into the declared schema
//! fields — `label` (from the labels file, else the class index) and
//! `confidence` — plus `candidates` (the top k, best first) when `top_k > 1`.

use serde_json::{Map, Value, json};
use thiserror::Error;
use ward_config::ClassifierSpec;
use ward_protocol::{DataType, Tensor};

/// The field holding the top-k list.
pub use ward_config::model::CLASSIFIER_CANDIDATES as CANDIDATES;

/// Why the model's output cannot be classified; the client gets it as an
/// `InvalidOutput` error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClassifyError {
    #[error("the model produced no {tensor:?} output for the classifier")]
    NoTensor { tensor: String },
    #[error("classifier tensor {tensor:?} has shape {shape:?}, expected [K] or [1, K]")]
    Shape { tensor: String, shape: Vec<u64> },
    #[error("classifier tensor {tensor:?} is {datatype}, expected FP32 or FP64")]
    Datatype { tensor: String, datatype: DataType },
    #[error("classifier tensor {tensor:?} holds {scores} scores for {classes} classes")]
    Count {
        tensor: String,
        scores: usize,
        classes: usize,
    },
    #[error("classifier tensor {tensor:?} holds a non-finite score")]
    NonFinite { tensor: String },
}

/// Scores of the first item of the batch, as f64.
fn scores(t: &Tensor) -> Result<Vec<f64>, ClassifyError> {
    let tensor = || t.name.clone();
    let classes = match t.shape.as_slice() {
        [k] | [1, k] => *k as usize,
        other => {
            return Err(ClassifyError::Shape {
                tensor: tensor(),
                shape: other.to_vec(),
            });
        }
    };
    let values: Vec<f64> = match t.datatype {
        DataType::Fp32 => t
            .data
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DataType::Fp64 => t
            .data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8")))
            .collect(),
        datatype => {
            return Err(ClassifyError::Datatype {
                tensor: tensor(),
                datatype,
            });
        }
    };
    if values.len() != classes || classes == 0 {
        return Err(ClassifyError::Count {
            tensor: tensor(),
            scores: values.len(),
            classes,
        });
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(ClassifyError::NonFinite { tensor: tensor() });
    }
    Ok(values)
}

fn softmax(v: &mut [f64]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    v.iter_mut().for_each(|x| *x /= sum);
}

/// Builds the structured output from the model's outputs.
pub fn classify(
    spec: &ClassifierSpec,
    labels: &[String],
    outputs: &[Tensor],
) -> Result<Map<String, Value>, ClassifyError> {
    let tensor = outputs
        .iter()
        .find(|t| t.name == spec.tensor)
        .ok_or_else(|| ClassifyError::NoTensor {
            tensor: spec.tensor.clone(),
        })?;
    let mut s = scores(tensor)?;
    if spec.softmax {
        softmax(&mut s);
    }
    let mut order: Vec<usize> = (0..s.len()).collect();
    // Stable sort: ties keep the lower class index first, as argmax does.
    order.sort_by(|a, b| s[*b].total_cmp(&s[*a]));
    let label = |i: usize| -> Value { labels.get(i).map_or_else(|| json!(i), |l| json!(l)) };
    let confidence = |i: usize| -> Value { json!(s[i].clamp(0.0, 1.0)) };
    let best = order[0];
    let mut out = Map::new();
    out.insert(spec.label_field.clone(), label(best));
    out.insert(spec.confidence_field.clone(), confidence(best));
    if spec.top_k > 1 {
        let top: Vec<Value> = order
            .iter()
            .take(spec.top_k as usize)
            .map(|&i| json!({ spec.label_field.as_str(): label(i), spec.confidence_field.as_str(): confidence(i) }))
            .collect();
        out.insert(CANDIDATES.to_owned(), Value::Array(top));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(softmax: bool, top_k: u32) -> ClassifierSpec {
        ClassifierSpec {
            tensor: "p".into(),
            softmax,
            top_k,
            labels: None,
            label_field: "label".into(),
            confidence_field: "confidence".into(),
        }
    }

    #[test]
    fn argmax_with_labels_and_top_k() {
        let t = Tensor::from_f32("p", vec![1, 3], &[0.2, 0.7, 0.1]);
        let labels = vec!["cat".to_owned(), "dog".to_owned(), "eel".to_owned()];
        let out = classify(&spec(false, 2), &labels, &[t]).unwrap();
        assert_eq!(out["label"], "dog");
        assert!((out["confidence"].as_f64().unwrap() - 0.7).abs() < 1e-6);
        assert_eq!(out[CANDIDATES][1]["label"], "cat");
    }

    #[test]
    fn softmax_turns_logits_into_probabilities() {
        let t = Tensor::from_f32("p", vec![2], &[0.0, 0.0]);
        let out = classify(&spec(true, 1), &[], &[t]).unwrap();
        assert_eq!(
            out["label"], 0,
            "ties go to the lower index; no labels gives the index"
        );
        assert!((out["confidence"].as_f64().unwrap() - 0.5).abs() < 1e-9);
        assert!(!out.contains_key(CANDIDATES));
    }

    #[test]
    fn bad_score_tensors_are_named() {
        let nan = Tensor::from_f32("p", vec![2], &[f32::NAN, 1.0]);
        assert!(
            classify(&spec(false, 1), &[], &[nan])
                .unwrap_err()
                .to_string()
                .contains("non-finite")
        );
        let batch = Tensor::from_f32("p", vec![2, 2], &[0.0; 4]);
        assert!(
            classify(&spec(false, 1), &[], &[batch])
                .unwrap_err()
                .to_string()
                .contains("shape [2, 2]")
        );
        assert!(
            classify(&spec(false, 1), &[], &[])
                .unwrap_err()
                .to_string()
                .contains("no \"p\" output")
        );
    }
}
