//! A JSON request body read field by field, so that every malformed body is a 400
//! `INVALID_INPUT` naming its field (`details.field`), and an unknown field is named with the
//! nearest known one rather than ignored.

use crate::errors::ApiError;
use axum::http::StatusCode;
use model_manager_core::ModelError;
use serde_json::{Map, Value};

/// `INVALID_INPUT` about `field`.
pub fn bad(field: &str, message: String) -> ModelError {
    ModelError::invalid_input(message).with("field", field)
}

/// What kind of JSON value `value` is, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// 413 for more than `max` inputs in `field`.
pub fn too_many(field: &str, count: usize, max: usize) -> ApiError {
    let error = bad(
        field,
        format!("{count} inputs in one request; the limit is {max} (server.max_inputs)"),
    );
    ApiError::with_status(error, StatusCode::PAYLOAD_TOO_LARGE)
}

/// `INVALID_INPUT` naming the first field of `fields` not in `allowed`, with the nearest.
pub fn unknown_field(fields: &Map<String, Value>, allowed: &[&str]) -> Result<(), ModelError> {
    let Some(name) = fields.keys().find(|k| !allowed.contains(&k.as_str())) else {
        return Ok(());
    };
    let near = model_manager_core::settings::schema::nearest(name, allowed.iter().copied());
    let hint = near.map_or_else(
        || format!("; the fields are {}", allowed.join(", ")),
        |n| format!("; did you mean `{n}`?"),
    );
    Err(bad(name, format!("unknown field `{name}`{hint}")))
}

/// A request body: a JSON object of known fields.
pub struct Body {
    fields: Map<String, Value>,
}

impl Body {
    /// `body` as a JSON object whose fields are all `allowed`.
    pub fn parse(body: &[u8], allowed: &[&str]) -> Result<Self, ModelError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| bad("body", format!("the request body is not valid JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(bad("body", "the request body must be a JSON object".into()));
        };
        unknown_field(&fields, allowed)?;
        Ok(Self { fields })
    }

    /// The field's value, if given and not null.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).filter(|v| !v.is_null())
    }

    /// A string field.
    pub fn string(&self, name: &str) -> Result<Option<String>, ModelError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(
                name,
                format!("`{name}` must be a string, not {}", kind(other)),
            )),
        }
    }

    /// A required string field.
    pub fn required_string(&self, name: &str) -> Result<String, ModelError> {
        self.string(name)?
            .ok_or_else(|| bad(name, format!("`{name}` is required")))
    }

    /// A boolean field.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, ModelError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(bad(
                name,
                format!("`{name}` must be true or false, not {}", kind(other)),
            )),
        }
    }

    /// A positive whole-number field.
    pub fn count(&self, name: &str) -> Result<Option<usize>, ModelError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => match v.as_u64().filter(|&n| n > 0) {
                Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
                None => Err(bad(
                    name,
                    format!("`{name}` must be a positive integer, not {v}"),
                )),
            },
        }
    }

    /// A required field holding a non-empty array, or a lone string where `lone_string`
    /// allows (one item): each item read by `read(its field name, it)`. `accepted` says what
    /// the field may be, for the message of another kind.
    pub fn list<T>(
        &self,
        name: &str,
        lone_string: bool,
        accepted: &str,
        read: impl Fn(&str, &Value) -> Result<T, ModelError>,
    ) -> Result<Vec<T>, ModelError> {
        match self.get(name) {
            None => Err(bad(name, format!("`{name}` is required"))),
            Some(lone @ Value::String(_)) if lone_string => Ok(vec![read(name, lone)?]),
            Some(Value::Array(items)) if items.is_empty() => {
                Err(bad(name, format!("`{name}` is empty")))
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| read(&format!("{name}[{i}]"), item))
                .collect(),
            Some(other) => Err(bad(
                name,
                format!("`{name}` must be {accepted}, not {}", kind(other)),
            )),
        }
    }

    /// A required field holding a string or a non-empty array of strings.
    pub fn texts(&self, name: &str) -> Result<Vec<String>, ModelError> {
        self.list(
            name,
            true,
            "a string or an array of strings",
            |field, v| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(bad(
                    field,
                    format!("`{field}` must be a string, not {}", kind(other)),
                )),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: ModelError) -> String {
        e.details["field"].as_str().unwrap().to_owned()
    }

    #[test]
    fn fields_are_read_and_named_when_wrong() {
        let allowed = ["a", "b", "texts"];
        let body = Body::parse(br#"{"a": "x", "b": true, "texts": ["p", "q"]}"#, &allowed).unwrap();
        assert_eq!(body.string("a").unwrap().as_deref(), Some("x"));
        assert_eq!(body.flag("b").unwrap(), Some(true));
        assert_eq!(body.texts("texts").unwrap(), vec!["p", "q"]);
        assert_eq!(field(body.flag("a").unwrap_err()), "a");
        assert_eq!(field(body.required_string("c").unwrap_err()), "c");
        assert_eq!(
            field(Body::parse(br#"{"text": []}"#, &allowed).err().unwrap()),
            "text"
        );
        let err = Body::parse(br#"{"text": []}"#, &allowed).err().unwrap();
        assert!(
            err.message.contains("did you mean `texts`"),
            "{}",
            err.message
        );
        let body = Body::parse(br#"{"texts": ["p", 1], "a": 0}"#, &allowed).unwrap();
        assert_eq!(field(body.texts("texts").unwrap_err()), "texts[1]");
        assert_eq!(field(body.count("a").unwrap_err()), "a");
        assert_eq!(field(Body::parse(b"[1]", &allowed).err().unwrap()), "body");
    }
}
