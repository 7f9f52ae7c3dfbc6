//! Bounded YAML parsing for untrusted files.
//!
//! `serde-saphyr` parses without panicking and enforces budgets; `serde_yaml`,
//! the usual choice, is deprecated. A model.yaml is a few kilobytes, so the
//! budgets are tight: a billion-laughs alias bomb or a 10,000-deep nesting
//! fails fast with a clear error instead of eating the supervisor's memory.

use serde_json::Value;

/// Budgets applied to one YAML document.
#[derive(Debug, Clone, Copy)]
pub struct YamlLimits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_nodes: usize,
    pub max_aliases: usize,
}

impl YamlLimits {
    /// For plugin-supplied contracts.
    pub const UNTRUSTED: YamlLimits = YamlLimits {
        max_bytes: 256 << 10,
        max_depth: 24,
        max_nodes: 20_000,
        max_aliases: 64,
    };
}

#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("file is {size} bytes, above the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("{0}")]
    Syntax(String),
}

fn options(limits: YamlLimits) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = limits.max_depth;
    budget.max_nodes = limits.max_nodes;
    budget.max_aliases = limits.max_aliases;
    budget.max_anchors = limits.max_aliases;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = limits.max_bytes;
    let mut opts = serde_saphyr::Options::default();
    opts.budget = Some(budget);
    opts
}

/// Parses one YAML document into a generic tree, within `limits`.
pub(crate) fn parse_value(text: &str, limits: YamlLimits) -> Result<Value, YamlError> {
    parse_typed(text, limits)
}

/// Parses one YAML document into a typed value, within `limits`.
pub(crate) fn parse_typed<T: serde::de::DeserializeOwned>(
    text: &str,
    limits: YamlLimits,
) -> Result<T, YamlError> {
    if text.len() > limits.max_bytes {
        return Err(YamlError::TooLarge {
            size: text.len(),
            max: limits.max_bytes,
        });
    }
    serde_saphyr::from_str_with_options(text, options(limits))
        .map_err(|e| YamlError::Syntax(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse_value(&doc, YamlLimits::UNTRUSTED).unwrap_err();
        assert!(matches!(err, YamlError::Syntax(_)), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let doc = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        assert!(parse_value(&doc, YamlLimits::UNTRUSTED).is_err());
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let doc = "a: 1\n".repeat(100_000);
        assert!(matches!(
            parse_value(&doc, YamlLimits::UNTRUSTED),
            Err(YamlError::TooLarge { .. })
        ));
    }

    #[test]
    fn plain_documents_parse() {
        let v = parse_value("a: 1\nb: [x, 2.5]\n", YamlLimits::UNTRUSTED).unwrap();
        assert_eq!(v, serde_json::json!({"a": 1, "b": ["x", 2.5]}));
    }
}
