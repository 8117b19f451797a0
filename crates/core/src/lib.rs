//! Core of model-manager. The root is the application's API: the [`ModelManager`] that
//! loads models on first use, shares one instance among callers, unloads idle ones and
//! keeps loaded models within count and memory limits; its [`Settings`]; the [`ModelError`]
//! every call returns, with a stable [`ErrorCode`]; the status types; and the [`Model`]
//! traits callers reach through a [`ModelHandle`].
//!
//! What backend crates implement and call ([`backend::ModelLoader`], registration, file
//! location, the token-level embedding interface, remote cache stores) is in [`backend`];
//! what a plugin host implements is in [`plugin_host`]. This crate depends on no ML engine.
//! The repository's `ARCHITECTURE.md` shows how the parts fit.

pub mod backend;
mod blocking;
mod cache;
mod cpu;
mod device;
mod engine;
mod error;
pub mod files;
mod fingerprint;
mod loader;
mod manager;
mod model;
mod outputs;
pub mod plugin_host;
mod plugins;
mod registry;
pub mod settings;
mod spec;

pub use blocking::off_runtime;
pub use cache::remote::{RemoteCacheStats, RemoteState};
pub use cache::{CacheStats, RestoreReport};
pub use cpu::CpuFeatures;
pub use device::{Device, DeviceChoice, DevicePreference, DeviceRequest};
pub use engine::{Admission, EngineStatus, HistogramSnapshot};
pub use error::{ErrorCode, ModelError, Result};
pub use files::{can_download, files_state, FilesState};
pub use manager::{
    ClassifyInput, ClassifyOutput, EmbedOptions, EmbeddingsOutput, InitReport, LabelScore,
    ModelHandle, ModelManager, ModelStatus, ModelStatusReport, RerankOutput, ScoreOptions,
    ServiceStatus, ShutdownReport, SparseOutput, LOAD_FAILURE_LOG_TARGET,
};
pub use model::{
    check_infer_inputs, Architecture, Embedder, Fidelity, GenerationParams, ImageValue, Infer,
    InferValue, Model, ModelInfo, NamedValues, Prompts, Quantization, TensorData, TensorValue,
    TextGenerator,
};
pub use outputs::{Outputs, ScoreActivation, ScoreHead, SparseVector};
pub use plugins::{PluginFailure, PluginLoadReport, PluginRecord, PluginTypeRecord};
pub use registry::Registry;
pub use settings::{PluginIsolation, PluginSettings, RemoteCacheSettings, Settings};
pub use spec::ModelSpec;
