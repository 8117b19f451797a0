//! Core of model-manager: the [`ModelLoader`] and [`Model`] traits, the [`Registry`] of
//! loaders by model type, the [`ModelManager`] that shares, counts, unloads and evicts
//! loaded models, [`Settings`] in the seed's flat keys, the [`ModelError`] type with the
//! seed's codes, and the [`EmbeddingCache`].
//!
//! This crate depends on no ML engine; backends implement [`ModelLoader`] and register
//! with `inventory::submit!` (see [`LoaderRegistration`]).

pub mod cache;
pub mod device;
pub mod engine;
pub mod error;
pub mod files;
pub mod fingerprint;
pub mod loader;
pub mod manager;
pub mod model;
pub mod plugins;
pub mod registry;
pub mod settings;
pub mod spec;

pub use cache::remote::{
    RemoteCacheStats, RemoteState, RemoteStore, RemoteStoreRegistration, StoreFuture,
};
pub use cache::{CacheNamespace, CacheStats, CachedEmbedding, EmbeddingCache, RestoreReport};
pub use device::{Device, DeviceChoice, DevicePreference, DeviceRequest, GpuProbe};
pub use engine::{Admission, EngineStatus, HistogramSnapshot};
pub use error::{ErrorCode, ModelError, Result};
pub use files::{
    can_download, files_state, locate_model_folder, locate_or_download, FilesState, ModelFolder,
};
pub use loader::{LoaderRegistration, ModelLoader, Probe};
pub use manager::{
    EmbeddingsOutput, InitReport, ModelHandle, ModelManager, ModelStatus, ModelStatusReport,
    ServiceStatus, ShutdownReport,
};
pub use model::{
    BatchCost, Embedder, GenerationParams, ImageValue, Infer, InferValue, Model, ModelInfo,
    NamedValues, TensorData, TensorValue, TextGenerator, TokenEmbedder, TokenizedText,
};
pub use plugins::{
    PluginFailure, PluginHost, PluginHostRegistration, PluginLoadReport, PluginRecord,
    PluginTypeRecord,
};
pub use registry::Registry;
pub use settings::Settings;
pub use settings::{PluginIsolation, PluginSettings, RemoteCacheSettings};
pub use spec::ModelSpec;

/// Re-exported so backends register loaders without naming the crate themselves.
pub use inventory;
