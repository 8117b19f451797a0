//! The loader every model type of this backend shares: a folder with `config.json`,
//! `tokenizer.json` and safetensors weights, and a function that builds the model.

use crate::embedding::{self, BertEmbedder};
use crate::t5::{self, T5Generator};
use crate::weights::{estimate_spec_bytes, probe_safetensors_folder, REQUIRED};
use crate::BACKEND_NAME;
use model_manager_core::backend::{ModelLoader, Probe};
use model_manager_core::{DeviceChoice, Model, ModelSpec, Result};
use model_manager_text::TextEmbedding;
use std::sync::Arc;

/// Loads one model type of this backend from a safetensors folder.
pub struct SafetensorsLoader {
    model_type: &'static str,
    option_keys: fn() -> &'static [&'static str],
    load: fn(&ModelSpec, &DeviceChoice) -> Result<Arc<dyn Model>>,
}

impl SafetensorsLoader {
    /// Type `embedding`: SentenceTransformer BERT models ([`BertEmbedder`]).
    pub fn embedding() -> Self {
        Self {
            model_type: "embedding",
            option_keys: embedding::option_keys,
            load: |spec, device| Ok(Arc::new(TextEmbedding(BertEmbedder::load(spec, device)?))),
        }
    }

    /// Type `text2text`: T5 and FLAN-T5 ([`T5Generator`]).
    pub fn text2text() -> Self {
        Self {
            model_type: "text2text",
            option_keys: t5::option_keys,
            load: |spec, device| Ok(Arc::new(T5Generator::load(spec, device)?)),
        }
    }
}

impl ModelLoader for SafetensorsLoader {
    fn model_type(&self) -> &str {
        self.model_type
    }
    fn backend(&self) -> &str {
        BACKEND_NAME
    }
    fn probe(&self, spec: &ModelSpec) -> Probe {
        probe_safetensors_folder(spec, REQUIRED)
    }
    fn estimate_bytes(&self, spec: &ModelSpec) -> Option<u64> {
        estimate_spec_bytes(spec, REQUIRED)
    }
    fn option_keys(&self) -> &[&str] {
        (self.option_keys)()
    }
    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        (self.load)(spec, device)
    }
}
