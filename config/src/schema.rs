//! Validation of a model's structured output against its declared
//! `output.schema`. The supervisor runs this on every result a worker
//! returns: the worker is as untrusted as the plugin inside it.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::{FieldSchema, FieldType};

/// Checks `value` (a JSON object) against `schema`; the error names the field
/// path and the rule broken. Fields the schema does not declare are refused:
/// the backend relies on the declared shape (spec 003 §8.4, "schema-only output").
pub fn validate_output(
    schema: &BTreeMap<String, FieldSchema>,
    value: &Value,
) -> Result<(), String> {
    let Value::Object(map) = value else {
        return Err(format!("output is {}, not an object", kind(value)));
    };
    check_object(schema, map, "")
}

fn check_object(
    schema: &BTreeMap<String, FieldSchema>,
    map: &serde_json::Map<String, Value>,
    path: &str,
) -> Result<(), String> {
    let at = |name: &str| {
        if path.is_empty() {
            name.to_owned()
        } else {
            format!("{path}.{name}")
        }
    };
    for (name, field) in schema {
        match map.get(name) {
            Some(v) => check(field, v, &at(name))?,
            None if field.optional => {}
            None => return Err(format!("{}: missing", at(name))),
        }
    }
    if let Some(extra) = map.keys().find(|k| !schema.contains_key(*k)) {
        return Err(format!("{}: not declared in the output schema", at(extra)));
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check(field: &FieldSchema, v: &Value, path: &str) -> Result<(), String> {
    let wrong = |want: &str| format!("{path}: expected {want}, found {}", kind(v));
    match &field.ty {
        FieldType::String { allowed } => {
            let s = v.as_str().ok_or_else(|| wrong("a string"))?;
            if let Some(allowed) = allowed
                && !allowed.iter().any(|a| a == s)
            {
                return Err(format!("{path}: {s:?} is not one of {allowed:?}"));
            }
        }
        FieldType::Float { min, max } => {
            let n = v.as_f64().ok_or_else(|| wrong("a number"))?;
            bounds(n, *min, *max, path)?;
        }
        FieldType::Integer { min, max } => {
            let n = v.as_i64().ok_or_else(|| wrong("an integer"))?;
            bounds(n as f64, min.map(|m| m as f64), max.map(|m| m as f64), path)?;
        }
        FieldType::Boolean => {
            v.as_bool().ok_or_else(|| wrong("a boolean"))?;
        }
        FieldType::Array { items } => {
            let list = v.as_array().ok_or_else(|| wrong("an array"))?;
            for (i, item) in list.iter().enumerate() {
                check(items, item, &format!("{path}[{i}]"))?;
            }
        }
        FieldType::Object { properties } => {
            let map = v.as_object().ok_or_else(|| wrong("an object"))?;
            check_object(properties, map, path)?;
        }
    }
    Ok(())
}

fn bounds(n: f64, min: Option<f64>, max: Option<f64>, path: &str) -> Result<(), String> {
    if let Some(min) = min
        && n < min
    {
        return Err(format!("{path}: {n} is below the minimum {min}"));
    }
    if let Some(max) = max
        && n > max
    {
        return Err(format!("{path}: {n} is above the maximum {max}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(ty: FieldType) -> FieldSchema {
        FieldSchema {
            ty,
            optional: false,
        }
    }

    fn schema() -> BTreeMap<String, FieldSchema> {
        let mut box_props = BTreeMap::new();
        box_props.insert(
            "x".to_owned(),
            field(FieldType::Integer {
                min: Some(0),
                max: None,
            }),
        );
        BTreeMap::from([
            (
                "label".to_owned(),
                field(FieldType::String {
                    allowed: Some(vec!["a".into(), "b".into()]),
                }),
            ),
            (
                "confidence".to_owned(),
                field(FieldType::Float {
                    min: Some(0.0),
                    max: Some(1.0),
                }),
            ),
            (
                "boxes".to_owned(),
                FieldSchema {
                    ty: FieldType::Array {
                        items: Box::new(field(FieldType::Object {
                            properties: box_props,
                        })),
                    },
                    optional: true,
                },
            ),
        ])
    }

    #[test]
    fn conforming_output_passes() {
        validate_output(&schema(), &json!({"label": "a", "confidence": 0.5})).unwrap();
        validate_output(
            &schema(),
            &json!({"label": "b", "confidence": 1, "boxes": [{"x": 3}]}),
        )
        .unwrap();
    }

    #[test]
    fn violations_name_the_field() {
        let s = schema();
        let cases = [
            (
                json!({"label": "c", "confidence": 0.5}),
                "label: \"c\" is not one of",
            ),
            (
                json!({"label": "a", "confidence": 2.0}),
                "confidence: 2 is above the maximum 1",
            ),
            (
                json!({"label": 5, "confidence": 0.5}),
                "label: expected a string, found a number",
            ),
            (json!({"confidence": 0.5}), "label: missing"),
            (
                json!({"label": "a", "confidence": 0.5, "extra": 1}),
                "extra: not declared",
            ),
            (
                json!({"label": "a", "confidence": 0.5, "boxes": [{"x": -1}]}),
                "boxes[0].x: -1 is below the minimum 0",
            ),
            (
                json!({"label": "a", "confidence": 0.5, "boxes": [{"x": 1.5}]}),
                "boxes[0].x: expected an integer",
            ),
            (json!([1, 2]), "output is an array, not an object"),
        ];
        for (value, needle) in cases {
            let err = validate_output(&s, &value).unwrap_err();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }
}
