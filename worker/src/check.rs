//! Checks a request's tensors against the model's declared inputs, naming the
//! exact problem: an unknown or missing input, a wrong datatype, a shape that
//! does not fit, or bytes that do not match the shape.

use ward_config::TensorSpec;
use ward_protocol::Tensor;

/// Whether a concrete shape fits a declared one (`-1` matches any size).
pub fn shape_fits(declared: &[i64], actual: &[u64]) -> bool {
    declared.len() == actual.len()
        && declared
            .iter()
            .zip(actual)
            .all(|(d, a)| *d == -1 || u64::try_from(*d) == Ok(*a))
}

pub fn fmt_shape(shape: &[i64]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| if *d == -1 { "-1".into() } else { d.to_string() })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Checks `inputs` against `declared`; on success returns them in declared order.
pub fn inputs(declared: &[TensorSpec], mut inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
    for (i, t) in inputs.iter().enumerate() {
        if inputs[..i].iter().any(|u| u.name == t.name) {
            return Err(format!("input {:?} is given twice", t.name));
        }
        let Some(spec) = declared.iter().find(|d| d.name == t.name) else {
            let names: Vec<&str> = declared.iter().map(|d| d.name.as_str()).collect();
            return Err(format!(
                "unknown input {:?} (the model takes: {})",
                t.name,
                names.join(", ")
            ));
        };
        if t.datatype != spec.datatype {
            return Err(format!(
                "input {:?} has datatype {}, the model takes {}",
                t.name, t.datatype, spec.datatype
            ));
        }
        if !shape_fits(&spec.shape, &t.shape) {
            return Err(format!(
                "input {:?} has shape {:?}, the model takes {}",
                t.name,
                t.shape,
                fmt_shape(&spec.shape)
            ));
        }
        t.check().map_err(|e| e.to_string())?;
    }
    let mut ordered = Vec::with_capacity(declared.len());
    for spec in declared {
        let Some(at) = inputs.iter().position(|t| t.name == spec.name) else {
            return Err(format!(
                "missing input {:?} ({} {})",
                spec.name,
                spec.datatype,
                fmt_shape(&spec.shape)
            ));
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
    use ward_protocol::DataType;

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
            inputs(&declared(), vec![wrong_name]).unwrap_err(),
            "unknown input \"inp\" (the model takes: input)"
        );

        let wrong_type = Tensor {
            datatype: DataType::Fp64,
            ..ok.clone()
        };
        assert_eq!(
            inputs(&declared(), vec![wrong_type]).unwrap_err(),
            "input \"input\" has datatype FP64, the model takes FP32"
        );

        let wrong_shape = Tensor::from_f32("input", vec![2, 5], &[0.0; 10]);
        assert_eq!(
            inputs(&declared(), vec![wrong_shape]).unwrap_err(),
            "input \"input\" has shape [2, 5], the model takes [-1, 4]"
        );

        let mut short = ok.clone();
        short.data.truncate(30);
        assert!(
            inputs(&declared(), vec![short])
                .unwrap_err()
                .contains("needs 32 bytes, got 30")
        );

        assert_eq!(
            inputs(&declared(), vec![]).unwrap_err(),
            "missing input \"input\" (FP32 [-1, 4])"
        );
        assert_eq!(
            inputs(&declared(), vec![ok.clone(), ok]).unwrap_err(),
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
