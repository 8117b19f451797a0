//! The body of `POST /v1/embeddings`, checked field by field so that every malformed body
//! is a 400 `INVALID_INPUT` that names the field (OpenAI's shape: `input` a string, an array
//! of strings, an array of token ids or an array of such arrays; `model`,
//! `encoding_format`, `dimensions`, `user`; and, as text-embeddings-inference takes them,
//! `prompt_name` or a literal `prompt` to prepend to every text).

use crate::errors::ApiError;
use crate::fields::{bad, kind, too_many, unknown_field};
use model_manager_core::ModelError;
use serde_json::{Map, Value};

/// What to embed.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// Texts.
    Texts(Vec<String>),
    /// Sequences of token ids, embedded as given.
    Tokens(Vec<Vec<u32>>),
}

impl Inputs {
    /// How many vectors the answer holds.
    pub fn len(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.len(),
            Inputs::Tokens(t) => t.len(),
        }
    }
}

/// A checked embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    /// What to embed.
    pub inputs: Inputs,
    /// The configured model id.
    pub model: String,
    /// Vectors as base64 little-endian f32 rather than JSON numbers.
    pub base64: bool,
    /// Leading dimensions to keep (then re-normalized).
    pub dimensions: Option<usize>,
    /// A prompt of the model's configuration to prepend, by name.
    pub prompt_name: Option<String>,
    /// A prompt text to prepend.
    pub prompt: Option<String>,
}

/// The fields of an embeddings request; any other is refused (as OpenAI does), so a typo
/// such as `inputs` is named instead of being ignored.
const FIELDS: &[&str] = &[
    "input",
    "model",
    "encoding_format",
    "dimensions",
    "user",
    "prompt_name",
    "prompt",
];

/// Parses and checks `body`; at most `max_inputs` inputs (413 beyond).
pub fn parse(body: &[u8], max_inputs: usize) -> Result<EmbeddingsRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad("body", format!("the request body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(bad("body", "the request body must be a JSON object".into()).into());
    };
    unknown_field(&fields, FIELDS)?;
    let inputs = inputs(fields.get("input"))?;
    if inputs.len() > max_inputs {
        return Err(too_many("input", inputs.len(), max_inputs));
    }
    string_field(&fields, "user")?;
    let prompt_name = string_field(&fields, "prompt_name")?;
    let prompt = string_field(&fields, "prompt")?;
    if matches!(inputs, Inputs::Tokens(_)) && (prompt_name.is_some() || prompt.is_some()) {
        let field = if prompt_name.is_some() {
            "prompt_name"
        } else {
            "prompt"
        };
        return Err(bad(
            field,
            format!("`{field}` applies to texts, not to token ids"),
        )
        .into());
    }
    Ok(EmbeddingsRequest {
        prompt_name,
        prompt,
        inputs,
        model: string_field(&fields, "model")?.unwrap_or_else(|| "embedding".into()),
        base64: match string_field(&fields, "encoding_format")?.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(bad(
                    "encoding_format",
                    format!("`encoding_format` must be \"float\" or \"base64\", not {other:?}"),
                )
                .into())
            }
        },
        dimensions: dimensions(fields.get("dimensions"))?,
    })
}

/// The model a body names, however malformed the rest (for metrics of failed requests).
pub fn model_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "embedding".into())
}

fn string_field(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, ModelError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(bad(
            name,
            format!("`{name}` must be a string, not {}", kind(other)),
        )),
    }
}

fn dimensions(value: Option<&Value>) -> Result<Option<usize>, ModelError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64().filter(|&d| d > 0) {
            Some(d) => Ok(Some(d as usize)),
            None => Err(bad(
                "dimensions",
                format!("`dimensions` must be a positive integer, not {v}"),
            )),
        },
    }
}

fn token(value: &Value, field: &str) -> Result<u32, ModelError> {
    value
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| {
            bad(
                field,
                format!("`{field}` must be a token id (an integer from 0), not {value}"),
            )
        })
}

fn inputs(value: Option<&Value>) -> Result<Inputs, ModelError> {
    let items = match value {
        None | Some(Value::Null) => return Err(bad("input", "`input` is required".into())),
        Some(Value::String(text)) => return Ok(Inputs::Texts(vec![text.clone()])),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(bad(
                "input",
                format!("`input` must be a string or an array, not {}", kind(other)),
            ))
        }
    };
    let Some(first) = items.first() else {
        return Err(bad("input", "`input` is empty".into()));
    };
    let at = |i: usize| format!("input[{i}]");
    match first {
        Value::String(_) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(bad(
                    &at(i),
                    format!(
                        "`{}` must be a string like `input[0]`, not {}",
                        at(i),
                        kind(other)
                    ),
                )),
            })
            .collect::<Result<_, _>>()
            .map(Inputs::Texts),
        Value::Number(_) => items
            .iter()
            .enumerate()
            .map(|(i, v)| token(v, &at(i)))
            .collect::<Result<_, _>>()
            .map(|ids| Inputs::Tokens(vec![ids])),
        Value::Array(_) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Array(ids) if !ids.is_empty() => ids
                    .iter()
                    .enumerate()
                    .map(|(j, id)| token(id, &format!("input[{i}][{j}]")))
                    .collect(),
                other => Err(bad(
                    &at(i),
                    format!(
                        "`{}` must be a non-empty array of token ids, not {other}",
                        at(i)
                    ),
                )),
            })
            .collect::<Result<_, _>>()
            .map(Inputs::Tokens),
        other => Err(bad(
            "input[0]",
            format!(
                "`input[0]` must be a string, a token id or an array of token ids, not {}",
                kind(other)
            ),
        )),
    }
}

/// The first `dimensions` values of `vector`, scaled back to unit length (OpenAI's
/// shortened embeddings).
pub fn shorten(vector: &mut Vec<f32>, dimensions: usize) {
    vector.truncate(dimensions);
    // In f64: squares of large finite f32 values would overflow to an infinite norm.
    let squares: f64 = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let norm = squares.sqrt().max(1e-12);
    vector
        .iter_mut()
        .for_each(|x| *x = (f64::from(*x) / norm) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn shortened_vectors_have_unit_length_even_from_huge_values() {
        let mut v = vec![3e38f32, -3e38, 1e38, 5.0];
        shorten(&mut v, 3);
        let length: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((length - 1.0).abs() < 1e-6, "{v:?}");
        let mut small = vec![3.0f32, 4.0, 12.0];
        shorten(&mut small, 2);
        assert_eq!(small, vec![0.6, 0.8]);
    }

    fn field_of(body: &str) -> String {
        let err = parse(body.as_bytes(), 4).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{body}");
        let err = err.error();
        assert_eq!(
            err.code,
            model_manager_core::ErrorCode::InvalidInput,
            "{body}"
        );
        err.details["field"].as_str().unwrap().to_owned()
    }

    #[test]
    fn every_openai_input_shape_parses() {
        let one = parse(br#"{"input": "hi"}"#, 4).unwrap();
        assert_eq!(
            (one.inputs, one.model.as_str()),
            (Inputs::Texts(vec!["hi".into()]), "embedding")
        );
        let ids = parse(br#"{"input": [1, 2, 3], "dimensions": 8, "user": "u"}"#, 4).unwrap();
        assert_eq!(
            (ids.inputs, ids.dimensions),
            (Inputs::Tokens(vec![vec![1, 2, 3]]), Some(8))
        );
        let many = parse(
            br#"{"input": [[1, 2], [3]], "encoding_format": "base64"}"#,
            4,
        )
        .unwrap();
        assert_eq!(
            (many.inputs, many.base64),
            (Inputs::Tokens(vec![vec![1, 2], vec![3]]), true)
        );
        let prompted = parse(br#"{"input": "q", "prompt_name": "query"}"#, 4).unwrap();
        assert_eq!(
            (prompted.prompt_name.as_deref(), prompted.prompt),
            (Some("query"), None)
        );
        let literal = parse(br#"{"input": "q", "prompt": "Represent: "}"#, 4).unwrap();
        assert_eq!(literal.prompt.as_deref(), Some("Represent: "));
    }

    #[test]
    fn malformed_bodies_name_their_field() {
        for (body, field) in [
            ("[1]", "body"),
            ("{", "body"),
            ("{}", "input"),
            (r#"{"input": []}"#, "input"),
            (r#"{"input": 5}"#, "input"),
            (r#"{"input": {"a": 1}}"#, "input"),
            (r#"{"input": ["a", 1]}"#, "input[1]"),
            (r#"{"input": [1, -2]}"#, "input[1]"),
            (r#"{"input": [[1], []]}"#, "input[1]"),
            (r#"{"input": [[1], [2, "x"]]}"#, "input[1][1]"),
            (r#"{"input": [true]}"#, "input[0]"),
            (r#"{"input": "a", "model": 3}"#, "model"),
            (
                r#"{"input": "a", "encoding_format": "hex"}"#,
                "encoding_format",
            ),
            (r#"{"input": "a", "dimensions": 0}"#, "dimensions"),
            (r#"{"input": "a", "dimensions": 1.5}"#, "dimensions"),
            (r#"{"input": "a", "user": []}"#, "user"),
            (r#"{"input": "a", "prompt_name": 1}"#, "prompt_name"),
            (
                r#"{"input": [1, 2], "prompt_name": "query"}"#,
                "prompt_name",
            ),
            (r#"{"input": [1, 2], "prompt": "query: "}"#, "prompt"),
        ] {
            assert_eq!(field_of(body), field, "{body}");
        }
        let err = parse(br#"{"input": ["a", "b", "c", "d", "e"]}"#, 4).unwrap_err();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(!err.error().details.contains_key("status"));
    }

    #[test]
    fn shortened_vectors_are_unit_length() {
        let mut v = vec![3.0, 4.0, 12.0];
        shorten(&mut v, 2);
        assert_eq!(v, vec![0.6, 0.8]);
    }
}
