//! candle backend of model-manager.
//!
//! Planned: type `embedding` (SentenceTransformer BERT-family models) and type `text2text`
//! (T5 / FLAN-T5). Until it is filled this crate registers **no** loader, so a model of those
//! types reports `UNSUPPORTED_MODEL_TYPE` with the list of types that are registered, rather
//! than pretending to load anything.

/// Name under which this backend's loaders will register.
pub const BACKEND_NAME: &str = "candle";
