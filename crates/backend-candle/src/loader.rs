//! The loader every model type of this backend shares: a folder with `config.json`,
//! `tokenizer.json` and safetensors weights, and a function that builds the model.

use crate::embedding::{self, read_config, CandleEmbedder};
use crate::t5::{self, T5Generator};
use crate::weights::{estimate_spec_bytes, probe_safetensors_folder, REQUIRED};
use crate::BACKEND_NAME;
use model_manager_core::backend::{locate_model_folder, ModelFiles, ModelLoader, Probe};
use model_manager_core::{Architecture, DeviceChoice, Model, ModelSpec, Prompts, Result};
use model_manager_text::Purpose;
use model_manager_text::TextEmbedding;
use std::sync::Arc;

/// Loads one model type of this backend from a safetensors folder.
pub struct SafetensorsLoader {
    model_type: &'static str,
    /// Files read besides [`REQUIRED`], where they exist.
    optional: &'static [&'static str],
    option_keys: fn() -> &'static [&'static str],
    /// What an encoder type is for (its option values are checked as its load reads
    /// them); `None` for text2text.
    purpose: Option<Purpose>,
    /// What the probe checks beyond the files being there.
    accepts: fn(&ModelSpec) -> Probe,
    describe: fn(&ModelSpec) -> Option<Architecture>,
    prompts: fn(&ModelSpec) -> Option<Prompts>,
    load: fn(&ModelSpec, &DeviceChoice) -> Result<Arc<dyn Model>>,
}

impl SafetensorsLoader {
    /// Type `embedding`: SentenceTransformer models of every supported family
    /// ([`CandleEmbedder`]); the probe refuses a `model_type` it does not run.
    pub fn embedding() -> Self {
        Self {
            model_type: "embedding",
            optional: embedding::OPTIONAL,
            option_keys: embedding::option_keys,
            purpose: Some(Purpose::Embedding),
            accepts: known_family,
            describe: embedding::describe,
            prompts: embedding::prompts,
            load: |spec, device| Ok(Arc::new(TextEmbedding(CandleEmbedder::load(spec, device)?))),
        }
    }

    /// Type `rerank`: one-label cross-encoders (`XxxForSequenceClassification` on a BERT,
    /// XLM-RoBERTa, DistilBERT or ModernBERT body).
    pub fn rerank() -> Self {
        Self::headed("rerank", Purpose::Rerank, |spec, device| {
            Ok(Arc::new(TextEmbedding(CandleEmbedder::load_for(
                spec,
                device,
                Purpose::Rerank,
            )?)))
        })
    }

    /// Type `classifier`: sequence classifiers with labels, on the same bodies.
    pub fn classifier() -> Self {
        Self::headed("classifier", Purpose::Classifier, |spec, device| {
            Ok(Arc::new(TextEmbedding(CandleEmbedder::load_for(
                spec,
                device,
                Purpose::Classifier,
            )?)))
        })
    }

    /// Type `sparse`: SPLADE over a masked-LM head (`BertForMaskedLM`, DistilBERT's).
    pub fn sparse() -> Self {
        Self::headed("sparse", Purpose::Sparse, |spec, device| {
            Ok(Arc::new(TextEmbedding(CandleEmbedder::load_for(
                spec,
                device,
                Purpose::Sparse,
            )?)))
        })
    }

    fn headed(
        model_type: &'static str,
        purpose: Purpose,
        load: fn(&ModelSpec, &DeviceChoice) -> Result<Arc<dyn Model>>,
    ) -> Self {
        Self {
            model_type,
            purpose: Some(purpose),
            optional: embedding::OPTIONAL,
            option_keys: embedding::option_keys,
            accepts: known_family,
            describe: |_| None,
            prompts: |_| Some(Prompts::default()),
            load,
        }
    }

    /// Type `text2text`: T5 and FLAN-T5 ([`T5Generator`]).
    pub fn text2text() -> Self {
        Self {
            model_type: "text2text",
            purpose: None,
            optional: t5::OPTIONAL,
            option_keys: t5::option_keys,
            accepts: |_| Probe::Accept,
            describe: |_| None,
            prompts: |_| None,
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
        match probe_safetensors_folder(spec, REQUIRED) {
            Probe::Accept => (self.accepts)(spec),
            rejected => rejected,
        }
    }
    fn estimate_bytes(&self, spec: &ModelSpec) -> Option<u64> {
        estimate_spec_bytes(spec, REQUIRED)
    }
    fn option_keys(&self) -> &[&str] {
        (self.option_keys)()
    }
    fn check_options(&self, spec: &ModelSpec) -> Result<()> {
        match self.purpose {
            Some(purpose) => embedding::check_options(spec, purpose),
            None => Ok(()),
        }
    }
    fn files(&self, _spec: &ModelSpec) -> Option<ModelFiles> {
        Some(ModelFiles::of(REQUIRED, self.optional))
    }
    fn load(&self, spec: &ModelSpec, device: &DeviceChoice) -> Result<Arc<dyn Model>> {
        (self.load)(spec, device)
    }
    fn describe(&self, spec: &ModelSpec) -> Option<Architecture> {
        (self.describe)(spec)
    }
    fn prompts(&self, spec: &ModelSpec) -> Option<Prompts> {
        (self.prompts)(spec)
    }
}

/// A folder whose `config.json` names a family this backend runs (one still to download is
/// judged at load).
fn known_family(spec: &ModelSpec) -> Probe {
    let Ok(folder) = locate_model_folder(spec, REQUIRED) else {
        return Probe::Accept;
    };
    match read_config(&folder.file("config.json")) {
        Err(e) if e.code == model_manager_core::ErrorCode::UnsupportedModelType => {
            Probe::reject(e.code, e.message)
        }
        _ => Probe::Accept,
    }
}
