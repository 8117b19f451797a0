//! What a backend crate implements and calls: a [`ModelLoader`] for each model type it
//! loads, registered with [`inventory::submit!`] as a [`LoaderRegistration`] (and a
//! [`GpuProbe`] if it can count GPUs); the model folder of a spec ([`locate_or_download`]);
//! for text embedders, the token-level interface the engine batches by ([`TokenEmbedder`]);
//! and, for a shared embedding-cache tier, a [`RemoteStore`].
//!
//! ```
//! use model_manager_core::backend::{ModelLoader, Probe};
//! use model_manager_core::{DeviceChoice, Model, ModelSpec, Result};
//! use std::sync::Arc;
//!
//! struct MyLoader;
//!
//! impl ModelLoader for MyLoader {
//!     fn model_type(&self) -> &str {
//!         "my-type"
//!     }
//!     fn backend(&self) -> &str {
//!         "my-backend"
//!     }
//!     fn probe(&self, _spec: &ModelSpec) -> Probe {
//!         Probe::Accept
//!     }
//!     fn load(&self, spec: &ModelSpec, _device: &DeviceChoice) -> Result<Arc<dyn Model>> {
//!         Err(model_manager_core::ModelError::invalid_input(format!("{} is a sketch", spec.id)))
//!     }
//! }
//!
//! model_manager_core::backend::inventory::submit! {
//!     model_manager_core::backend::LoaderRegistration::new(|| Arc::new(MyLoader))
//! }
//! ```

pub use crate::cache::remote::{OpenStore, RemoteStore, RemoteStoreRegistration, StoreFuture};
pub use crate::device::GpuProbe;
pub use crate::files::{locate_model_folder, locate_or_download, ModelFolder};
pub use crate::loader::{LoaderRegistration, ModelFiles, ModelLoader, Probe};
pub use crate::model::{BatchCost, TokenEmbedder, TokenizedText};
pub use inventory;
