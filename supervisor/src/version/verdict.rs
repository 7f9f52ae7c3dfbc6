//! The output verdict: a worker is untrusted, so every answer it gives is
//! checked before a client sees it — each output tensor against the
//! declared ones (name, datatype, shape, byte length), and the structured
//! output against the declared schema.

use ward_config::{ModelContract, TensorMismatch, validate_output};
use ward_protocol::{Tensor, TensorError};

/// Why an answer is refused (the client gets INVALID_OUTPUT with this text).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutputViolation {
    #[error("output {0}")]
    Malformed(#[source] TensorError),
    #[error("output {0:?} is not declared in model.yaml")]
    Undeclared(String),
    #[error("output {0}")]
    Mismatch(#[source] TensorMismatch),
    #[error("structured output is not JSON: {0}")]
    NotJson(String),
    #[error("output schema violation: {0}")]
    Schema(String),
}

/// Checks one answer; on success returns the structured output parsed.
pub fn check(
    contract: &ModelContract,
    outputs: &[Tensor],
    structured: Option<&str>,
) -> Result<Option<serde_json::Value>, OutputViolation> {
    let declared = &contract.output.tensors;
    for t in outputs {
        if declared.is_empty() {
            t.check().map_err(OutputViolation::Malformed)?;
            continue;
        }
        let spec = declared
            .iter()
            .find(|d| d.name == t.name)
            .ok_or_else(|| OutputViolation::Undeclared(t.name.clone()))?;
        spec.check(t).map_err(OutputViolation::Mismatch)?;
    }
    let Some(text) = structured else {
        return Ok(None);
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| OutputViolation::NotJson(e.to_string()))?;
    validate_output(&contract.output.schema, &value)
        .map_err(|e| OutputViolation::Schema(e.to_string()))?;
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use ward_protocol::DataType;

    use super::*;

    fn contract(tensors: bool) -> ModelContract {
        let extra = if tensors {
            "  tensors: [{name: \"y\", datatype: FP32, shape: [-1, 2]}]\n"
        } else {
            ""
        };
        crate::fixtures::contract("m", "1.0.0", extra)
    }

    fn y(datatype: DataType, shape: Vec<u64>, bytes: usize) -> Tensor {
        Tensor {
            name: "y".into(),
            datatype,
            shape,
            data: vec![0; bytes],
        }
    }

    #[test]
    fn declared_outputs_pass_and_the_structured_output_is_parsed() {
        let c = contract(true);
        let ok = check(
            &c,
            &[y(DataType::Fp32, vec![3, 2], 24)],
            Some(r#"{"label": "cat", "score": 0.5}"#),
        )
        .expect("a fitting answer");
        assert_eq!(ok, Some(serde_json::json!({"label": "cat", "score": 0.5})));
        assert_eq!(check(&c, &[], None), Ok(None));
    }

    #[test]
    fn each_violation_is_named() {
        let c = contract(true);
        let e = check(&c, &[y(DataType::Int32, vec![3, 2], 24)], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "output \"y\" has datatype INT32, declared FP32"
        );
        let e = check(&c, &[y(DataType::Fp32, vec![3, 3], 36)], None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "output \"y\" has shape [3, 3], declared [-1, 2]"
        );
        let mut z = y(DataType::Fp32, vec![1, 2], 8);
        z.name = "z".into();
        let e = check(&c, &[z], None).unwrap_err();
        assert_eq!(e.to_string(), "output \"z\" is not declared in model.yaml");
        let e = check(&c, &[], Some("{not json")).unwrap_err();
        assert!(matches!(e, OutputViolation::NotJson(_)), "{e}");
        let e = check(&c, &[], Some(r#"{"label": 3}"#)).unwrap_err();
        assert!(matches!(e, OutputViolation::Schema(_)), "{e}");
    }

    #[test]
    fn undeclared_tensors_are_still_checked_for_their_own_consistency() {
        let c = contract(false);
        let mut t = y(DataType::Fp32, vec![1, 2], 8);
        assert_eq!(check(&c, std::slice::from_ref(&t), None), Ok(None));
        t.data.pop();
        let e = check(&c, &[t], None).unwrap_err();
        assert!(matches!(e, OutputViolation::Malformed(_)), "{e}");
    }
}
