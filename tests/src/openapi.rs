//! Checks real responses against an OpenAPI 3.1 document: the operation of
//! a request's method and path, the response documented for its status,
//! its media type, and its body against that response's schema.
//!
//! The schema check covers the JSON Schema that utoipa 5 emits: `type` (one
//! or a list, `integer` as a number without a fraction), `properties`,
//! `required`, `additionalProperties`, `items`, `enum`, `const`, `$ref` to
//! anywhere in the document (beside other keywords, as 3.1 allows),
//! `allOf`, `anyOf`, `oneOf`, `not`, and `minimum`/`maximum`. `format`,
//! `description` and `example` say nothing about validity; `{}` and `true`
//! allow anything.

use serde_json::Value;

use crate::serve::Exchange;

/// An OpenAPI document.
#[derive(Debug, Clone)]
pub struct Document {
    doc: Value,
}

impl Document {
    /// The document `doc`; panics unless it has paths.
    pub fn new(doc: Value) -> Self {
        assert!(
            doc["paths"].as_object().is_some_and(|p| !p.is_empty()),
            "not an OpenAPI document with paths: {doc}"
        );
        Document { doc }
    }

    /// The JSON.
    pub fn json(&self) -> &Value {
        &self.doc
    }

    /// Every operation: method (lowercase) and path template.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (path, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
                if item.get(method).is_some() {
                    out.push((method.to_string(), path.clone()));
                }
            }
        }
        out
    }

    /// The path template that `target` (a request target, query allowed)
    /// matches: a literal segment over a `{parameter}` where both match.
    pub fn template(&self, target: &str) -> Option<String> {
        let path = target.split(['?', '#']).next().unwrap_or_default();
        let segments: Vec<&str> = path.split('/').collect();
        let mut best: Option<(usize, &String)> = None;
        for template in self.doc["paths"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(t, _)| t)
        {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut literal = 0;
            let fits = parts.iter().zip(&segments).all(|(part, seg)| {
                if part.starts_with('{') && part.ends_with('}') {
                    !seg.is_empty()
                } else {
                    literal += 1;
                    part == seg
                }
            });
            if fits && best.is_none_or(|(n, _)| literal > n) {
                best = Some((literal, template));
            }
        }
        best.map(|(_, t)| t.clone())
    }

    /// Whether the document has an operation for `method` on `target`.
    pub fn has_operation(&self, method: &str, target: &str) -> bool {
        self.template(target).is_some_and(|t| {
            self.doc["paths"][&t]
                .get(method.to_ascii_lowercase())
                .is_some()
        })
    }

    /// Checks one response to `method` `target` against the document.
    pub fn check(
        &self,
        method: &str,
        target: &str,
        status: u16,
        media_type: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let what = format!("{method} {target} -> {status}");
        let template = self
            .template(target)
            .ok_or_else(|| format!("{what}: no path of the document matches"))?;
        let operation = self.doc["paths"][&template]
            .get(method.to_ascii_lowercase())
            .ok_or_else(|| format!("{what}: {template} has no {method} operation"))?;
        let responses = &operation["responses"];
        let family = format!("{}XX", status / 100);
        let response = [status.to_string(), family, "default".to_string()]
            .iter()
            .find_map(|key| responses.get(key))
            .ok_or_else(|| {
                format!(
                    "{what}: status {status} is not documented for {method} {template} (documented: {})",
                    responses
                        .as_object()
                        .map(|r| r.keys().cloned().collect::<Vec<_>>().join(", "))
                        .unwrap_or_default()
                )
            })?;
        let response = self.resolve(response)?;
        let content = response.get("content").and_then(Value::as_object);
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{what}: the document gives no body, but {} bytes came",
                    body.len()
                ))
            };
        };
        let media = content.get(media_type).ok_or_else(|| {
            format!(
                "{what}: content type {media_type:?} is not documented (documented: {})",
                content.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        let Some(schema) = media.get("schema") else {
            return Ok(());
        };
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            format!(
                "{what}: the body is not JSON ({e}): {}",
                String::from_utf8_lossy(body)
            )
        })?;
        let mut errors = Vec::new();
        self.validate(schema, &value, "$", &mut errors, 0);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{what}: the body does not fit the schema:\n  {}\nbody: {value}",
                errors.join("\n  ")
            ))
        }
    }

    /// Checks every exchange; the router's own answers to paths and methods
    /// it does not serve (404 "no such path", 405), paths outside `/v1`
    /// and the document itself are passed over. Panics listing every
    /// mismatch.
    pub fn check_all(&self, exchanges: &[Exchange]) {
        let mut failures = Vec::new();
        for e in exchanges {
            if skipped(e) {
                continue;
            }
            let r = &e.response;
            if let Err(message) = self.check(&e.method, &e.path, r.status, &r.media_type(), &r.body)
            {
                failures.push(message);
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} responses do not match /v1/openapi.json:\n{}",
            failures.len(),
            exchanges.len(),
            failures.join("\n\n")
        );
    }

    /// `value` of `{"$ref": ...}` resolved, else `value`.
    fn resolve<'a>(&'a self, value: &'a Value) -> Result<&'a Value, String> {
        match value.get("$ref").and_then(Value::as_str) {
            Some(reference) => self.pointer(reference),
            None => Ok(value),
        }
    }

    fn pointer(&self, reference: &str) -> Result<&Value, String> {
        let pointer = reference
            .strip_prefix('#')
            .ok_or_else(|| format!("$ref {reference:?} is not within the document"))?;
        self.doc
            .pointer(pointer)
            .ok_or_else(|| format!("$ref {reference:?} points at nothing"))
    }

    /// Adds to `errors` every way `value` (at `at`) breaks `schema`.
    pub fn validate(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        errors: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > 64 {
            errors.push(format!("{at}: $ref nesting deeper than 64"));
            return;
        }
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                errors.push(format!("{at}: the schema allows nothing"));
                return;
            }
            Value::Object(map) => map,
            other => {
                errors.push(format!("{at}: {other} is not a schema"));
                return;
            }
        };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            match self.pointer(reference) {
                Ok(target) => self.validate(target, value, at, errors, depth + 1),
                Err(e) => errors.push(format!("{at}: {e}")),
            }
        }
        if let Some(types) = schema.get("type") {
            let allowed: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if !allowed.iter().any(|t| is_type(value, t)) {
                errors.push(format!(
                    "{at}: {} is not of type {}",
                    short(value),
                    allowed.join(" or ")
                ));
                return;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            errors.push(format!(
                "{at}: {} is not one of {}",
                short(value),
                Value::Array(options.clone())
            ));
        }
        if let Some(constant) = schema.get("const")
            && constant != value
        {
            errors.push(format!("{at}: {} is not {constant}", short(value)));
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                && n < min
            {
                errors.push(format!("{at}: {n} is below the minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                && n > max
            {
                errors.push(format!("{at}: {n} is above the maximum {max}"));
            }
        }
        if let Value::Object(object) = value {
            let properties = schema.get("properties").and_then(Value::as_object);
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !object.contains_key(name) {
                    errors.push(format!("{at}: required property {name:?} is missing"));
                }
            }
            for (name, item) in object {
                let path = format!("{at}.{name}");
                match properties.and_then(|p| p.get(name)) {
                    Some(property) => self.validate(property, item, &path, errors, depth + 1),
                    None => match schema.get("additionalProperties") {
                        Some(Value::Bool(false)) => {
                            errors.push(format!("{at}: property {name:?} is not allowed"));
                        }
                        Some(extra @ Value::Object(_)) => {
                            self.validate(extra, item, &path, errors, depth + 1);
                        }
                        _ => {}
                    },
                }
            }
        }
        if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.validate(item_schema, item, &format!("{at}[{i}]"), errors, depth + 1);
            }
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.validate(sub, value, at, errors, depth + 1);
            }
        }
        let passes = |sub: &Value| {
            let mut own = Vec::new();
            self.validate(sub, value, at, &mut own, depth + 1);
            own.is_empty()
        };
        if let Some(any) = schema.get("anyOf").and_then(Value::as_array)
            && !any.iter().any(passes)
        {
            errors.push(format!("{at}: {} fits none of anyOf", short(value)));
        }
        if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
            let fits = one.iter().filter(|s| passes(s)).count();
            if fits != 1 {
                errors.push(format!(
                    "{at}: {} fits {fits} of oneOf, not exactly 1",
                    short(value)
                ));
            }
        }
        if let Some(not) = schema.get("not")
            && passes(not)
        {
            errors.push(format!("{at}: {} fits the schema of `not`", short(value)));
        }
    }
}

/// Whether the check passes `e` over: answers of the router itself, not
/// of an operation, and what lies outside the API's operations.
fn skipped(e: &Exchange) -> bool {
    let path = e.path.split('?').next().unwrap_or_default();
    if !path.starts_with("/v1/") || path == "/v1/openapi.json" {
        return true;
    }
    let r = &e.response;
    let detail = serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|b| b["detail"].as_str().map(str::to_string))
        .unwrap_or_default();
    (r.status == 404 && detail.starts_with("no such path")) || r.status == 405
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// `value` as JSON, cut to a readable length.
fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 120 {
        let cut: String = text.chars().take(120).collect();
        format!("{cut}...")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Document {
        Document::new(json!({
            "openapi": "3.1.0",
            "paths": {
                "/v1/things/{id}": {"get": {"responses": {
                    "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                    "204": {"description": "none"}
                }}},
                "/v1/things/special": {"get": {"responses": {"200": {"description": "any"}}}}
            },
            "components": {"schemas": {"Thing": {
                "type": "object",
                "required": ["id"],
                "additionalProperties": false,
                "properties": {
                    "id": {"type": "integer", "minimum": 0},
                    "name": {"type": ["string", "null"]},
                    "kind": {"enum": ["a", "b"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "extra": {"oneOf": [{"type": "null"}, {"type": "object"}]},
                    "any": {}
                }
            }}}
        }))
    }

    fn check(body: Value) -> Result<(), String> {
        doc().check(
            "GET",
            "/v1/things/7?x=1",
            200,
            "application/json",
            body.to_string().as_bytes(),
        )
    }

    #[test]
    fn bodies_that_fit_pass() {
        check(json!({"id": 1})).expect("fits");
        check(json!({"id": 1, "name": null, "kind": "b", "tags": ["x"], "extra": {}, "any": [1]}))
            .expect("fits");
        doc()
            .check("GET", "/v1/things/7", 204, "", b"")
            .expect("no body");
        assert_eq!(
            doc().template("/v1/things/special").as_deref(),
            Some("/v1/things/special")
        );
    }

    #[test]
    fn bodies_and_statuses_that_do_not_fit_fail() {
        for bad in [
            json!({}),
            json!({"id": -1}),
            json!({"id": 1.5}),
            json!({"id": "1"}),
            json!({"id": 1, "name": 3}),
            json!({"id": 1, "kind": "c"}),
            json!({"id": 1, "tags": [1]}),
            json!({"id": 1, "extra": 2}),
            json!({"id": 1, "other": true}),
            json!([1]),
        ] {
            assert!(check(bad.clone()).is_err(), "{bad} passed");
        }
        let d = doc();
        assert!(d.check("GET", "/v1/things/7", 418, "", b"").is_err());
        assert!(d.check("GET", "/v1/things/7", 204, "", b"x").is_err());
        assert!(
            d.check("GET", "/v1/things/7", 200, "text/plain", b"{}")
                .is_err()
        );
        assert!(d.check("POST", "/v1/things/7", 200, "", b"").is_err());
        assert!(d.check("GET", "/v1/nothing/7/8", 200, "", b"").is_err());
    }
}
