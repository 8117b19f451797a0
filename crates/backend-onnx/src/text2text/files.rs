//! Where an encoder-decoder export keeps its graphs: optimum's layout
//! (`encoder_model.onnx`, `decoder_model.onnx` and, for a KV cache,
//! `decoder_with_past_model.onnx`) or the plain one (`encoder.onnx`, `decoder.onnx`, no
//! cache), in the model folder or its `onnx/` subfolder.

use model_manager_core::{ErrorCode, ModelError, ModelSpec, Result};
use std::path::{Path, PathBuf};

/// The graph files of one export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphFiles {
    /// `input_ids`, `attention_mask` → `last_hidden_state`.
    pub encoder: PathBuf,
    /// `input_ids`, `encoder_hidden_states`, `encoder_attention_mask` → `logits` (and, in
    /// optimum's exports, `present.*`).
    pub decoder: PathBuf,
    /// One token per row and `past_key_values.*` → `logits`, `present.*`; used when present.
    pub decoder_with_past: Option<PathBuf>,
}

impl GraphFiles {
    /// Every file, for sizes.
    pub fn all(&self) -> impl Iterator<Item = &Path> {
        [
            Some(&self.encoder),
            Some(&self.decoder),
            self.decoder_with_past.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
    }

    /// Bytes of every graph file.
    pub fn bytes(&self) -> Option<u64> {
        self.all()
            .map(|f| std::fs::metadata(f).ok().map(|m| m.len()))
            .sum()
    }
}

/// The layouts looked for, in order: (encoder, decoder, decoder with past).
const LAYOUTS: &[(&str, &str, Option<&str>)] = &[
    (
        "encoder_model.onnx",
        "decoder_model.onnx",
        Some("decoder_with_past_model.onnx"),
    ),
    ("encoder.onnx", "decoder.onnx", None),
];

/// The graphs in `folder` or `folder/onnx`; `MODEL_NOT_FOUND` naming both layouts.
pub fn find(spec: &ModelSpec, folder: &Path) -> Result<GraphFiles> {
    for dir in [folder.to_path_buf(), folder.join("onnx")] {
        for (encoder, decoder, with_past) in LAYOUTS {
            let (encoder, decoder) = (dir.join(encoder), dir.join(decoder));
            if encoder.is_file() && decoder.is_file() {
                return Ok(GraphFiles {
                    encoder,
                    decoder,
                    decoder_with_past: with_past.map(|f| dir.join(f)).filter(|p| p.is_file()),
                });
            }
        }
    }
    Err(ModelError::new(
        ErrorCode::ModelNotFound,
        format!(
            "no encoder-decoder ONNX export in {} (need encoder_model.onnx and decoder_model.onnx \
             [+ decoder_with_past_model.onnx], or encoder.onnx and decoder.onnx, here or in onnx/)",
            folder.display()
        ),
    )
    .for_model(&spec.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ModelSpec {
        model_manager_core::Settings::from_toml_str("models.t.type = \"text2text\"", ".")
            .unwrap()
            .models
            .remove("t")
            .unwrap()
    }

    #[test]
    fn both_layouts_are_found_here_or_in_onnx() {
        let dir = tempfile::tempdir().unwrap();
        let err = find(&spec(), dir.path()).unwrap_err();
        assert_eq!(err.code, ErrorCode::ModelNotFound);
        assert!(err.message.contains("encoder.onnx"), "{}", err.message);
        std::fs::write(dir.path().join("encoder.onnx"), "x").unwrap();
        std::fs::write(dir.path().join("decoder.onnx"), "x").unwrap();
        let plain = find(&spec(), dir.path()).unwrap();
        assert_eq!(plain.decoder_with_past, None);
        let sub = dir.path().join("onnx");
        std::fs::create_dir(&sub).unwrap();
        for f in [
            "encoder_model.onnx",
            "decoder_model.onnx",
            "decoder_with_past_model.onnx",
        ] {
            std::fs::write(sub.join(f), "x").unwrap();
        }
        std::fs::remove_file(dir.path().join("decoder.onnx")).unwrap();
        let optimum = find(&spec(), dir.path()).unwrap();
        assert_eq!(optimum.encoder, sub.join("encoder_model.onnx"));
        assert_eq!(
            optimum.decoder_with_past,
            Some(sub.join("decoder_with_past_model.onnx"))
        );
        assert_eq!(optimum.bytes(), Some(3));
    }
}
