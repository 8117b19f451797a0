//! The handlers.

use super::errors::ApiError;
use super::metrics::{tag_model, tag_usage};
use super::request::{self, Inputs};
use super::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use model_manager_core::{Admission, EmbedOptions, ErrorCode, GenerationParams, ModelError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

type Answer = Result<Json<Value>, ApiError>;

/// `GET /health`.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// A JSON body of any content type (`curl -d` sends form encoding) as `T`; a malformed one
/// is 400 with serde's account of the field.
fn json_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut json = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let field = e.path().to_string();
        let error =
            ModelError::invalid_input(format!("bad request body: `{field}`: {}", e.inner()))
                .with("field", field);
        ApiError::with_status(error, StatusCode::BAD_REQUEST)
    })
}

/// Bytes of JSON per vector value: a float as text, or base64 of 4 bytes.
fn value_bytes(base64: bool) -> usize {
    if base64 {
        6
    } else {
        12
    }
}

/// `POST /v1/embeddings`, OpenAI-compatible: texts or token ids, `encoding_format` float or
/// base64, `dimensions`.
pub async fn embeddings(State(state): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let parsed = request::parse(&body, state.config.limits.max_inputs);
    let request = parsed.inspect_err(|_| tag_model(&request::model_of(&body)))?;
    tag_model(&request.model);
    let manager = &state.manager;
    let mut out = match &request.inputs {
        Inputs::Texts(texts) => {
            let options = EmbedOptions {
                prompt_name: request.prompt_name.clone(),
                prompt: request.prompt.clone(),
                ..EmbedOptions::default()
            };
            manager
                .generate_embeddings_with_options(&request.model, texts, &options)
                .await?
        }
        Inputs::Tokens(ids) => {
            manager
                .generate_embeddings_for_tokens(&request.model, ids, Admission::FailFast)
                .await?
        }
    };
    tag_usage(out.embeddings.len(), out.tokens);
    if let Some(d) = request.dimensions {
        if d > out.dimension {
            let message = format!(
                "`dimensions` is {d}, more than the {} of model `{}`",
                out.dimension, request.model
            );
            return Err(ModelError::invalid_input(message)
                .with("field", "dimensions")
                .into());
        }
        out.embeddings
            .iter_mut()
            .for_each(|v| request::shorten(v, d));
    }
    let size = out.embeddings.len()
        * request.dimensions.unwrap_or(out.dimension)
        * value_bytes(request.base64);
    if size > state.config.limits.max_response_bytes {
        let message = format!(
            "the answer would take about {size} bytes, over server.max_response_bytes ({}); ask for encoding_format \"base64\", fewer inputs or fewer dimensions",
            state.config.limits.max_response_bytes
        );
        return Err(ApiError::with_status(
            ModelError::invalid_input(message),
            StatusCode::PAYLOAD_TOO_LARGE,
        ));
    }
    let data = out
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, vector)| EmbeddingItem {
            object: "embedding",
            index,
            embedding: if request.base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Embedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                Embedding::Floats(vector)
            },
        })
        .collect();
    let list = EmbeddingList {
        object: "list",
        data,
        model: &request.model,
        usage: Usage {
            prompt_tokens: out.tokens,
            total_tokens: out.tokens,
        },
    };
    Ok(json_response(&list, size + 256))
}

/// The answer of `POST /v1/embeddings`, serialized as it stands: each float as the shortest
/// text that reads back to the same f32 (through a `Value` it became an f64 and took twice
/// the digits), and no tree of values built per request.
#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem<'a>>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingItem<'a> {
    object: &'static str,
    index: usize,
    embedding: Embedding<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Embedding<'a> {
    Floats(&'a [f32]),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// `value` as a JSON response, written into a buffer of `capacity` bytes from the start
/// (axum's `Json` starts at 128 bytes and grows a 4 KB vector's answer five times).
fn json_response(value: &impl Serialize, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => ApiError::from(ModelError::new(
            ErrorCode::GenerateEmbeddingsError,
            format!("the answer could not be written as JSON: {error}"),
        ))
        .into_response(),
    }
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
pub async fn generate(State(state): State<AppState>, body: Bytes) -> Answer {
    let request: GenerateRequest = json_body(&body)?;
    tag_model(&request.model);
    let text = state
        .manager
        .generate_text(&request.model, &request.prompt, &request.params)
        .await?;
    Ok(Json(
        json!({"success": true, "model": request.model, "text": text}),
    ))
}

/// `GET /v1/models`, in OpenAI's list shape plus each model's type and state; `created` is
/// when the server started serving it (the settings' models exist from then on).
pub async fn models(State(state): State<AppState>) -> Answer {
    let status = state.manager.get_model_status().await?;
    let data: Vec<Value> = status
        .models
        .iter()
        .map(|(id, m)| {
            json!({
                "id": id, "object": "model", "created": state.started_at,
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
    inputs: model_manager_core::NamedValues,
}

/// `POST /v1/models/{id}/infer`: generic inference on named inputs (tensors, images as
/// base64, text, JSON).
pub async fn infer(State(state): State<AppState>, Path(id): Path<String>, body: Bytes) -> Answer {
    tag_model(&id);
    let request: InferRequest = json_body(&body)?;
    let most = state.config.limits.max_tensor_elements;
    model_manager_core::check_infer_inputs(&request.inputs, Some(most))?;
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
        json_body(&body)?
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
    // The model's state now, not what was asked: a model pinned by its settings or an
    // earlier request stays pinned.
    let status = state.manager.get_model_status().await?;
    let model = status.models.get(&id);
    Ok(Json(json!({
        "success": true, "model": id,
        "state": model.map_or("loaded", |m| m.state),
        "pinned": model.is_some_and(|m| m.pinned),
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
