//! The OpenAPI 3.0.3 description of ward's HTTP API, served as-is at
//! `GET /v1/openapi.json`.
//!
//! The document is hand-written JSON; the tests below hold it to the router
//! ([`crate::api::routes::ROUTES`]) in both directions and check that it is
//! internally consistent (every `$ref` resolves, every path parameter is
//! declared, every error response is the one `Error` shape, the refusals
//! made before a handler runs are documented). `tests/tests/schema.rs`
//! holds a running ward's answers to it with schemathesis.

/// The document, as served.
pub const DOCUMENT: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    use super::DOCUMENT;
    use crate::errors::ErrorCode;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
    }

    fn paths(doc: &Value) -> &serde_json::Map<String, Value> {
        doc["paths"].as_object().expect("paths is an object")
    }

    /// Every operation as (METHOD, path, path item, operation).
    fn operations(doc: &Value) -> Vec<(String, &str, &Value, &Value)> {
        let mut out = Vec::new();
        for (path, item) in paths(doc) {
            let item_obj = item.as_object().expect("a path item is an object");
            for (key, op) in item_obj {
                if METHODS.contains(&key.as_str()) {
                    out.push((key.to_uppercase(), path.as_str(), item, op));
                }
            }
        }
        out
    }

    /// Follows a local `$ref` (`#/a/b`), if the value is one.
    fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').expect("a local $ref");
                resolve(doc, doc.pointer(pointer).expect("$ref resolves"))
            }
            None => v,
        }
    }

    fn collect_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    match (k.as_str(), child) {
                        ("$ref", Value::String(r)) => out.push(r),
                        _ => collect_refs(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
            _ => {}
        }
    }

    /// `{name}` segments of a path template.
    fn template_params(path: &str) -> BTreeSet<&str> {
        path.split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect()
    }

    #[test]
    fn is_openapi_3_0_3_json() {
        let doc = doc();
        assert_eq!(doc["openapi"], "3.0.3");
        assert!(doc["info"]["title"].is_string());
        assert_eq!(
            doc["info"]["version"],
            env!("CARGO_PKG_VERSION"),
            "info.version follows ward's version"
        );
    }

    /// Kept in sync with the router: every route has an operation, and every
    /// operation is a route.
    #[test]
    fn operations_match_the_router_routes() {
        let doc = doc();
        let documented: BTreeSet<(String, String)> = operations(&doc)
            .into_iter()
            .map(|(m, p, _, _)| (m, p.to_owned()))
            .collect();
        let routed: BTreeSet<(String, String)> = crate::api::routes::ROUTES
            .iter()
            .map(|(m, p)| (m.to_uppercase(), (*p).to_owned()))
            .collect();
        assert_eq!(
            routed.len(),
            crate::api::routes::ROUTES.len(),
            "ROUTES has duplicates"
        );
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "openapi.json is out of sync with api::ROUTES: routes without an operation: \
             {undocumented:?}; operations without a route: {unrouted:?}"
        );
    }

    #[test]
    fn every_operation_has_a_unique_id_a_summary_and_a_success() {
        let doc = doc();
        let mut ids = BTreeMap::new();
        for (method, path, _, op) in operations(&doc) {
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
            if let Some(other) = ids.insert(id.to_owned(), format!("{method} {path}")) {
                panic!("operationId {id:?} is used by {other} and {method} {path}");
            }
            let summary = op["summary"].as_str().unwrap_or("");
            assert!(!summary.is_empty(), "{method} {path} has no summary");
            let responses = op["responses"]
                .as_object()
                .unwrap_or_else(|| panic!("{method} {path} has no responses"));
            assert!(
                responses.keys().any(|code| code.starts_with('2')),
                "{method} {path} has no 2xx response"
            );
        }
    }

    #[test]
    fn every_ref_resolves() {
        let doc = doc();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("$ref {r:?} is not local to the document"));
            assert!(
                doc.pointer(pointer).is_some(),
                "$ref {r:?} does not resolve"
            );
        }
    }

    #[test]
    fn every_path_parameter_is_declared() {
        let doc = doc();
        for (method, path, item, op) in operations(&doc) {
            let mut declared = BTreeSet::new();
            for list in [&item["parameters"], &op["parameters"]] {
                for p in list.as_array().into_iter().flatten() {
                    let p = resolve(&doc, p);
                    if p["in"] == "path" {
                        assert_eq!(
                            p["required"], true,
                            "{method} {path}: path parameter {} must be required",
                            p["name"]
                        );
                        declared.insert(p["name"].as_str().expect("a parameter has a name"));
                    }
                }
            }
            assert_eq!(
                declared,
                template_params(path),
                "{method} {path}: declared path parameters differ from the template's"
            );
        }
    }

    /// Every non-2xx response is the one `Error` shape, except a probe's
    /// negative answer (a readiness 400 carries the same body as its 200),
    /// which may also be one of several shapes as long as `Error` is one.
    #[test]
    fn every_error_response_is_the_error_schema() {
        let doc = doc();
        let error_ref = Value::from("#/components/schemas/Error");
        for (method, path, _, op) in operations(&doc) {
            let responses = op["responses"].as_object().expect("responses");
            let ok_schema = responses
                .get("200")
                .map(|r| &resolve(&doc, r)["content"]["application/json"]["schema"]);
            for (code, resp) in responses {
                if code.starts_with('2') {
                    continue;
                }
                let schema = &resolve(&doc, resp)["content"]["application/json"]["schema"];
                let is_error = schema["$ref"] == error_ref;
                let one_of_error = schema["oneOf"]
                    .as_array()
                    .is_some_and(|alts| alts.iter().any(|a| a["$ref"] == error_ref));
                let probe = Some(schema) == ok_schema;
                assert!(
                    is_error || one_of_error || probe,
                    "{method} {path}: response {code} is not the Error schema"
                );
            }
        }
    }

    /// A path segment that is not UTF-8 once percent-decoded is refused
    /// before any handler runs (400), whatever the route; a body is limited
    /// to `server.body_limit_bytes` (413) wherever one is read.
    #[test]
    fn extractor_refusals_are_documented() {
        let doc = doc();
        for (method, path, _, op) in operations(&doc) {
            let responses = &op["responses"];
            if !template_params(path).is_empty() {
                assert!(
                    responses.get("400").is_some(),
                    "{method} {path} has path parameters: it must document 400"
                );
            }
            if op.get("requestBody").is_some() {
                assert!(
                    responses.get("413").is_some(),
                    "{method} {path} reads a body: it must document 413"
                );
            }
        }
    }

    /// The health summary (spec 003 §7.2) writes the runtime's health in
    /// lower case (`telemetry::capability`); everywhere else it is `Health`.
    #[test]
    fn health_summary_status_is_health_in_lower_case() {
        let doc = doc();
        let schemas = &doc["components"]["schemas"];
        let health: Vec<String> = schemas["Health"]["enum"]
            .as_array()
            .expect("Health has an enum")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_ascii_lowercase)
            .collect();
        let summary: Vec<String> = schemas["HealthSummary"]["properties"]["status"]["enum"]
            .as_array()
            .expect("HealthSummary.status has an enum")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        assert_eq!(summary, health);
        assert_eq!(
            schemas["RuntimeHealth"]["properties"]["status"]["$ref"],
            "#/components/schemas/Health"
        );
    }

    #[test]
    fn overloaded_answers_carry_retry_after() {
        let doc = doc();
        let unavailable = &doc["components"]["responses"]["ServiceUnavailable"];
        let header = resolve(&doc, &unavailable["headers"]["Retry-After"]);
        assert!(header["schema"].is_object());
    }

    #[test]
    fn every_error_code_is_documented() {
        let codes = [
            ErrorCode::ModelNotFound,
            ErrorCode::VersionRequired,
            ErrorCode::ModelNotReady,
            ErrorCode::InvalidInput,
            ErrorCode::Timeout,
            ErrorCode::WorkerCrashed,
            ErrorCode::Overloaded,
            ErrorCode::ModelError,
            ErrorCode::InvalidOutput,
            ErrorCode::ShuttingDown,
            ErrorCode::Internal,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::PayloadTooLarge,
            ErrorCode::Unauthorized,
        ];
        // A new variant breaks this match: add it to `codes` and the document.
        for c in codes {
            match c {
                ErrorCode::ModelNotFound
                | ErrorCode::VersionRequired
                | ErrorCode::ModelNotReady
                | ErrorCode::InvalidInput
                | ErrorCode::Timeout
                | ErrorCode::WorkerCrashed
                | ErrorCode::Overloaded
                | ErrorCode::ModelError
                | ErrorCode::InvalidOutput
                | ErrorCode::ShuttingDown
                | ErrorCode::Internal
                | ErrorCode::NotFound
                | ErrorCode::MethodNotAllowed
                | ErrorCode::PayloadTooLarge
                | ErrorCode::Unauthorized => {}
            }
        }
        let doc = doc();
        let documented: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
            .as_array()
            .expect("ErrorCode has an enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for code in codes.iter().map(|c| c.as_str()) {
            assert!(
                documented.contains(code),
                "error code {code} is undocumented"
            );
        }
    }

    #[test]
    fn admin_operations_need_the_bearer_scheme() {
        let doc = doc();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        // The admin API, and Triton's repository actions that map onto it.
        let admin = |path: &str| {
            path.starts_with("/v1/admin/") || path.starts_with("/v2/repository/models/")
        };
        for (method, path, _, op) in operations(&doc) {
            if admin(path) {
                assert_eq!(
                    op["security"],
                    serde_json::json!([{ "bearer": [] }]),
                    "{method} {path} must require the bearer token"
                );
                assert!(
                    op["responses"].get("401").is_some(),
                    "{method} {path} must document 401"
                );
            } else {
                assert!(
                    op.get("security").is_none(),
                    "{method} {path} is not an admin route"
                );
            }
        }
    }
}
