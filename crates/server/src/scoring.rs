//! The routes of the models that score rather than embed, in the shapes their clients
//! already speak: text-embeddings-inference's `/rerank`, `/embed_sparse` and `/predict`, and
//! Cohere's (and Jina's) `/v1/rerank`, which LangChain and LlamaIndex call. Each body is
//! read field by field (400 naming the field; an unknown field named with the nearest), at
//! most `server.max_inputs` inputs (413), and the model runs through its engine.

use crate::errors::ApiError;
use crate::fields::{bad, kind, too_many, Body};
use crate::metrics::{tag_model, tag_usage};
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use model_manager_core::{ClassifyInput, ModelError, ScoreOptions};
use serde_json::{json, Value};

type Answer = Result<Json<Value>, ApiError>;

/// The model a body names (for metrics, however malformed the rest), else `default`.
fn model_of(body: &[u8], default: &str) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| default.into())
}

/// `body` parsed by `parse`, the model tagged for metrics either way.
fn read<T>(
    body: &[u8],
    default: &str,
    parse: impl FnOnce(&[u8]) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    tag_model(&model_of(body, default));
    parse(body)
}

fn options(body: &Body, raw_scores: bool) -> Result<ScoreOptions, ModelError> {
    Ok(ScoreOptions {
        truncate: body.flag("truncate")?.unwrap_or(true),
        raw_scores,
        ..ScoreOptions::default()
    })
}

/// A reranking request, whichever shape it came in.
struct Rerank {
    model: String,
    query: String,
    documents: Vec<String>,
    options: ScoreOptions,
    return_documents: bool,
    top_n: Option<usize>,
}

fn tei_rerank(body: &[u8], max_inputs: usize) -> Result<Rerank, ApiError> {
    const FIELDS: &[&str] = &[
        "model",
        "query",
        "texts",
        "raw_scores",
        "return_text",
        "truncate",
        "truncation_direction",
    ];
    let b = Body::parse(body, FIELDS)?;
    if let Some(direction) = b
        .string("truncation_direction")?
        .filter(|d| !d.eq_ignore_ascii_case("right"))
    {
        return Err(bad(
            "truncation_direction",
            format!("`truncation_direction` `{direction}` is not supported (Right)"),
        )
        .into());
    }
    let documents = b.texts("texts")?;
    if documents.len() > max_inputs {
        return Err(too_many("texts", documents.len(), max_inputs));
    }
    Ok(Rerank {
        model: b.string("model")?.unwrap_or_else(|| "rerank".into()),
        query: b.required_string("query")?,
        documents,
        options: options(&b, b.flag("raw_scores")?.unwrap_or(false))?,
        return_documents: b.flag("return_text")?.unwrap_or(false),
        top_n: None,
    })
}

/// Cohere's documents: strings, or objects with a `text`.
fn cohere_documents(b: &Body) -> Result<Vec<String>, ModelError> {
    b.list("documents", false, "an array", |field, item| match item {
        Value::String(s) => Ok(s.clone()),
        Value::Object(o) => match o.get("text") {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(bad(
                &format!("{field}.text"),
                format!("`{field}` must have a string `text`"),
            )),
        },
        other => Err(bad(
            field,
            format!(
                "`{field}` must be a string or an object with a `text`, not {}",
                kind(other)
            ),
        )),
    })
}

fn cohere_rerank(body: &[u8], max_inputs: usize) -> Result<Rerank, ApiError> {
    const FIELDS: &[&str] = &[
        "model",
        "query",
        "documents",
        "top_n",
        "return_documents",
        "max_chunks_per_doc",
        "truncate",
    ];
    let b = Body::parse(body, FIELDS)?;
    let documents = cohere_documents(&b)?;
    if documents.len() > max_inputs {
        return Err(too_many("documents", documents.len(), max_inputs));
    }
    Ok(Rerank {
        model: b.required_string("model")?,
        query: b.required_string("query")?,
        documents,
        options: options(&b, false)?,
        return_documents: b.flag("return_documents")?.unwrap_or(false),
        top_n: b.count("top_n")?,
    })
}

/// The documents' indices, best first (ties keep input order), and their scores.
async fn ranked(
    state: &AppState,
    request: &Rerank,
) -> Result<(Vec<(usize, f32)>, usize), ApiError> {
    let out = state
        .manager
        .rerank(
            &request.model,
            &request.query,
            &request.documents,
            &request.options,
        )
        .await?;
    tag_usage(request.documents.len(), out.tokens);
    let mut order: Vec<(usize, f32)> = out.scores.into_iter().enumerate().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok((order, out.tokens))
}

/// `POST /rerank` (text-embeddings-inference): `{"model"?, "query", "texts", "raw_scores"?,
/// "return_text"?, "truncate"?}` → `[{"index", "score", "text"?}]`, best first.
pub async fn rerank(State(state): State<AppState>, body: Bytes) -> Answer {
    let request = read(&body, "rerank", |b| {
        tei_rerank(b, state.config.limits.max_inputs)
    })?;
    let (order, _) = ranked(&state, &request).await?;
    let answer: Vec<Value> = order
        .into_iter()
        .map(|(index, score)| match request.return_documents {
            true => json!({"index": index, "score": score, "text": request.documents[index]}),
            false => json!({"index": index, "score": score}),
        })
        .collect();
    Ok(Json(Value::Array(answer)))
}

/// `POST /v1/rerank` (Cohere, Jina): `{"model", "query", "documents": [str | {"text"}],
/// "top_n"?, "return_documents"?}` → `{"model", "results": [{"index", "relevance_score",
/// "document"?: {"text"}}], "usage": {"total_tokens"}}`, best first.
pub async fn rerank_v1(State(state): State<AppState>, body: Bytes) -> Answer {
    let request = read(&body, "rerank", |b| {
        cohere_rerank(b, state.config.limits.max_inputs)
    })?;
    let (order, tokens) = ranked(&state, &request).await?;
    let results: Vec<Value> = order
        .into_iter()
        .take(request.top_n.unwrap_or(usize::MAX))
        .map(|(index, score)| match request.return_documents {
            true => json!({"index": index, "relevance_score": score, "document": {"text": request.documents[index]}}),
            false => json!({"index": index, "relevance_score": score}),
        })
        .collect();
    Ok(Json(json!({
        "model": request.model,
        "results": results,
        "usage": {"total_tokens": tokens},
    })))
}

/// `POST /embed_sparse` (text-embeddings-inference): `{"inputs": str | [str], "model"?,
/// "truncate"?}` → `[[{"index", "value"}, …], …]`, the non-zero entries of each vector.
pub async fn embed_sparse(State(state): State<AppState>, body: Bytes) -> Answer {
    const FIELDS: &[&str] = &[
        "model",
        "inputs",
        "truncate",
        "truncation_direction",
        "prompt_name",
    ];
    let parse = |body: &[u8]| -> Result<_, ApiError> {
        let b = Body::parse(body, FIELDS)?;
        if b.get("prompt_name").is_some() {
            return Err(bad("prompt_name", "sparse models take no prompts".into()).into());
        }
        let texts = b.texts("inputs")?;
        if texts.len() > state.config.limits.max_inputs {
            return Err(too_many(
                "inputs",
                texts.len(),
                state.config.limits.max_inputs,
            ));
        }
        let model = b.string("model")?.unwrap_or_else(|| "sparse".into());
        Ok((model, texts, options(&b, false)?))
    };
    let (model, texts, options) = read(&body, "sparse", parse)?;
    let out = state.manager.embed_sparse(&model, &texts, &options).await?;
    tag_usage(texts.len(), out.tokens);
    let entries: usize = out.vectors.iter().map(|v| v.indices.len()).sum();
    // About 30 bytes of JSON an entry.
    if entries.saturating_mul(30) > state.config.limits.max_response_bytes {
        let message = format!(
            "the answer holds {entries} entries, more than server.max_response_bytes allows; send fewer texts"
        );
        return Err(ApiError::with_status(
            bad("inputs", message),
            StatusCode::PAYLOAD_TOO_LARGE,
        ));
    }
    let vectors: Vec<Value> = out
        .vectors
        .iter()
        .map(|v| {
            let pairs: Vec<Value> = v
                .indices
                .iter()
                .zip(&v.values)
                .map(|(i, x)| json!({"index": i, "value": x}))
                .collect();
            Value::Array(pairs)
        })
        .collect();
    Ok(Json(Value::Array(vectors)))
}

/// `/predict`'s inputs: a text, texts, or pairs `[a, b]`.
fn predict_inputs(b: &Body) -> Result<Vec<ClassifyInput>, ModelError> {
    b.list(
        "inputs",
        true,
        "a string or an array",
        |field, item| match item {
            Value::String(s) => Ok(ClassifyInput::Text(s.clone())),
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => {
                    Ok(ClassifyInput::Pair(a.clone(), b.clone()))
                }
                _ => Err(bad(
                    field,
                    format!("`{field}` must be a pair of strings [a, b]"),
                )),
            },
            other => Err(bad(
                field,
                format!(
                    "`{field}` must be a string or a pair [a, b], not {}",
                    kind(other)
                ),
            )),
        },
    )
}

/// `POST /predict` (text-embeddings-inference): `{"inputs": str | [str] | [[a, b]],
/// "model"?, "raw_scores"?, "truncate"?}` → `[[{"label", "score"}, …], …]`, each input's
/// labels best first.
pub async fn predict(State(state): State<AppState>, body: Bytes) -> Answer {
    const FIELDS: &[&str] = &[
        "model",
        "inputs",
        "raw_scores",
        "truncate",
        "truncation_direction",
    ];
    let parse = |body: &[u8]| -> Result<_, ApiError> {
        let b = Body::parse(body, FIELDS)?;
        let inputs = predict_inputs(&b)?;
        if inputs.len() > state.config.limits.max_inputs {
            return Err(too_many(
                "inputs",
                inputs.len(),
                state.config.limits.max_inputs,
            ));
        }
        let model = b.string("model")?.unwrap_or_else(|| "classifier".into());
        Ok((
            model,
            inputs,
            options(&b, b.flag("raw_scores")?.unwrap_or(false))?,
        ))
    };
    let (model, inputs, options) = read(&body, "classifier", parse)?;
    let out = state.manager.classify(&model, &inputs, &options).await?;
    tag_usage(inputs.len(), out.tokens);
    let answer: Vec<Value> = out
        .predictions
        .iter()
        .map(|row| {
            json!(row
                .iter()
                .map(|l| json!({"label": l.label, "score": l.score}))
                .collect::<Vec<_>>())
        })
        .collect();
    Ok(Json(Value::Array(answer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: ApiError) -> String {
        e.error().details["field"].as_str().unwrap().to_owned()
    }

    #[test]
    fn rerank_bodies_parse_in_both_shapes_and_name_their_mistakes() {
        let tei = tei_rerank(
            br#"{"query": "q", "texts": ["a", "b"], "return_text": true}"#,
            8,
        )
        .unwrap();
        assert_eq!(
            (
                tei.model.as_str(),
                tei.documents.len(),
                tei.return_documents
            ),
            ("rerank", 2, true)
        );
        let cohere = cohere_rerank(
            br#"{"model": "r", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 1}"#,
            8,
        )
        .unwrap();
        assert_eq!(
            (cohere.documents, cohere.top_n),
            (vec!["a".to_owned(), "b".to_owned()], Some(1))
        );
        for (body, field) in [
            (r#"{"query": "q"}"#, "texts"),
            (r#"{"texts": ["a"]}"#, "query"),
            (r#"{"query": "q", "texts": ["a", 1]}"#, "texts[1]"),
            (r#"{"query": "q", "text": ["a"]}"#, "text"),
            (
                r#"{"query": "q", "texts": ["a"], "raw_scores": "yes"}"#,
                "raw_scores",
            ),
        ] {
            assert_eq!(
                field_of(tei_rerank(body.as_bytes(), 8).err().unwrap()),
                field,
                "{body}"
            );
        }
        for (body, field) in [
            (r#"{"query": "q", "documents": ["a"]}"#, "model"),
            (
                r#"{"model": "r", "query": "q", "documents": [{"txt": "a"}]}"#,
                "documents[0].text",
            ),
            (
                r#"{"model": "r", "query": "q", "documents": ["a"], "top_n": 0}"#,
                "top_n",
            ),
        ] {
            assert_eq!(
                field_of(cohere_rerank(body.as_bytes(), 8).err().unwrap()),
                field,
                "{body}"
            );
        }
        let err = tei_rerank(br#"{"query": "q", "texts": ["a", "b", "c"]}"#, 2)
            .err()
            .unwrap();
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn predict_inputs_are_texts_or_pairs() {
        let b = Body::parse(br#"{"inputs": ["a", ["b", "c"]]}"#, &["inputs"]).unwrap();
        assert_eq!(
            predict_inputs(&b).unwrap(),
            vec![
                ClassifyInput::Text("a".into()),
                ClassifyInput::Pair("b".into(), "c".into())
            ]
        );
        let b = Body::parse(br#"{"inputs": [["b"]]}"#, &["inputs"]).unwrap();
        assert_eq!(
            field_of(predict_inputs(&b).unwrap_err().into()),
            "inputs[0]"
        );
    }
}
