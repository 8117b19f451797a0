//! The handlers.

use super::errors::ApiError;
use super::metrics::tag_model;
use super::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::Json;
use base64::Engine;
use model_manager::{GenerationParams, ModelError};
use serde::Deserialize;
use serde_json::{json, Value};

type Answer = Result<Json<Value>, ApiError>;

/// `input` of an embeddings request: one string or several.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Input {
    /// One text.
    One(String),
    /// Several texts.
    Many(Vec<String>),
}

/// OpenAI's embeddings request.
#[derive(Deserialize)]
pub struct EmbeddingsRequest {
    input: Input,
    #[serde(default = "default_embedding_model")]
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
}

fn default_embedding_model() -> String {
    "embedding".into()
}

fn too_many(count: usize, max: usize) -> ApiError {
    ApiError(
        ModelError::invalid_input(format!("{count} inputs in one request; the limit is {max}"))
            .with("status", 413),
    )
}

/// `GET /health`.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `POST /v1/embeddings`, OpenAI-compatible (`encoding_format` float or base64).
pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<Json<EmbeddingsRequest>, JsonRejection>,
) -> Answer {
    let Json(request) = body?;
    tag_model(&request.model);
    let texts = match request.input {
        Input::One(text) => vec![text],
        Input::Many(texts) => texts,
    };
    if texts.is_empty() {
        return Err(ModelError::invalid_input("`input` is empty").into());
    }
    if texts.len() > state.config.max_inputs {
        return Err(too_many(texts.len(), state.config.max_inputs));
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ModelError::invalid_input(format!(
                "encoding_format must be float or base64, not {other}"
            ))
            .into())
        }
    };
    let out = state
        .manager
        .generate_embeddings(&texts, &request.model)
        .await?;
    let tokens = out.tokens;
    let data: Vec<Value> = out
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": request.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })))
}

/// `POST /v1/generate` body.
#[derive(Deserialize)]
pub struct GenerateRequest {
    #[serde(default = "default_generation_model")]
    model: String,
    prompt: String,
    #[serde(flatten)]
    params: GenerationParams,
}

fn default_generation_model() -> String {
    "t5_summarizer".into()
}

/// `POST /v1/generate`.
pub async fn generate(
    State(state): State<AppState>,
    body: Result<Json<GenerateRequest>, JsonRejection>,
) -> Answer {
    let Json(request) = body?;
    tag_model(&request.model);
    let text = state
        .manager
        .generate_text(&request.model, &request.prompt, &request.params)
        .await?;
    Ok(Json(
        json!({"success": true, "model": request.model, "text": text}),
    ))
}

/// `GET /v1/models`, in OpenAI's list shape plus each model's type and state.
pub async fn models(State(state): State<AppState>) -> Answer {
    let status = state.manager.get_model_status().await?;
    let data: Vec<Value> = status
        .models
        .iter()
        .map(|(id, m)| {
            json!({
                "id": id, "object": "model", "created": m.loaded_at.map_or(0, |t| t as u64),
                "owned_by": "model-manager", "type": m.model_type, "backend": m.backend, "state": m.state,
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// `GET /v1/status`.
pub async fn status(State(state): State<AppState>) -> Answer {
    let mut value = serde_json::to_value(state.manager.get_status().await?).unwrap_or_default();
    value["success"] = json!(true);
    Ok(Json(value))
}

/// `POST /v1/models/{id}/infer` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    inputs: model_manager::NamedValues,
}

/// `POST /v1/models/{id}/infer`: generic inference on named inputs (tensors, images as
/// base64, text, JSON).
pub async fn infer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<InferRequest>, JsonRejection>,
) -> Answer {
    tag_model(&id);
    let Json(request) = body?;
    let outputs = state.manager.infer(&id, request.inputs).await?;
    Ok(Json(
        json!({"success": true, "model": id, "outputs": outputs}),
    ))
}

/// `POST /v1/models/{id}/load` body.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LoadRequest {
    #[serde(default)]
    pin: bool,
    /// Seconds to keep the model loaded before the idle rules apply again.
    #[serde(default)]
    keep_alive: Option<f64>,
}

/// `POST /v1/models/{id}/load`: loads now; `{"pin": true}` keeps it loaded.
pub async fn load(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    let request: LoadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LoadRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ModelError::invalid_input(format!("bad request body: {e}")))?
    };
    let keep_alive = match request.keep_alive {
        Some(s) if !(0.0..=31_536_000.0).contains(&s) => {
            return Err(ModelError::invalid_input(
                "keep_alive is a number of seconds between 0 and one year",
            )
            .into())
        }
        other => other.map(std::time::Duration::from_secs_f64),
    };
    let pin = request.pin;
    tag_model(&id);
    state.manager.preload(&id).await?;
    state.keep_alive.cancel(&id);
    if pin || keep_alive.is_some() {
        state.manager.pin(&id, true)?;
    }
    if let (false, Some(duration)) = (pin, keep_alive) {
        state
            .keep_alive
            .release_after(state.manager.clone(), &id, duration);
    }
    Ok(Json(json!({
        "success": true, "model": id, "state": "loaded", "pinned": pin,
        "keep_alive": keep_alive.map(|d| d.as_secs_f64()),
    })))
}

/// `POST /v1/models/{id}/unload`: waits for in-flight requests on it, then unloads.
pub async fn unload(State(state): State<AppState>, Path(id): Path<String>) -> Answer {
    tag_model(&id);
    state.keep_alive.cancel(&id);
    state.manager.pin(&id, false)?;
    let was_loaded = state.manager.unload_model(&id).await?;
    Ok(Json(
        json!({"success": true, "model": id, "unloaded": was_loaded}),
    ))
}
