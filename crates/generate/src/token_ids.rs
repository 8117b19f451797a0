//! The special token ids of an encoder-decoder's `config.json`, with T5's defaults (pad 0,
//! end 1, decoder start = pad), and the serde helpers that read Hugging Face's forms of them
//! (`null`, or a list of end tokens).

use serde::Deserialize;

/// The ids generation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SpecialTokens {
    /// Padding id (also the decoder start when `decoder_start_token_id` is absent).
    #[serde(default, deserialize_with = "id_or_null")]
    pub pad_token_id: u32,
    /// End-of-sequence id (the first, when config.json lists several).
    #[serde(default = "default_eos", deserialize_with = "first_id")]
    pub eos_token_id: u32,
    /// First decoder input.
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
}

impl Default for SpecialTokens {
    /// T5's: pad 0, end 1, start = pad.
    fn default() -> Self {
        Self {
            pad_token_id: 0,
            eos_token_id: default_eos(),
            decoder_start_token_id: None,
        }
    }
}

impl SpecialTokens {
    /// The first decoder input.
    pub fn decoder_start(&self) -> u32 {
        self.decoder_start_token_id.unwrap_or(self.pad_token_id)
    }
}

/// T5's end-of-sequence id.
pub fn default_eos() -> u32 {
    1
}

/// A token id, or 0 for `null` (T5 configs may write `"pad_token_id": null`).
pub fn id_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(d)?.unwrap_or(0))
}

/// A token id, or the first of a list of them.
pub fn first_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ids {
        One(u32),
        Many(Vec<u32>),
    }
    match Ids::deserialize(d)? {
        Ids::One(id) => Ok(id),
        Ids::Many(ids) => ids
            .first()
            .copied()
            .ok_or_else(|| serde::de::Error::custom("eos_token_id is an empty list")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_forms_and_t5_defaults() {
        let t: SpecialTokens = serde_json::from_str("{}").unwrap();
        assert_eq!(t, SpecialTokens::default());
        assert_eq!((t.decoder_start(), t.eos_token_id), (0, 1));
        let t: SpecialTokens = serde_json::from_str(
            r#"{"eos_token_id": [2, 3], "pad_token_id": null, "decoder_start_token_id": 5, "d_model": 8}"#,
        )
        .unwrap();
        assert_eq!(
            (t.eos_token_id, t.pad_token_id, t.decoder_start()),
            (2, 0, 5)
        );
        assert!(serde_json::from_str::<SpecialTokens>(r#"{"eos_token_id": []}"#).is_err());
    }
}
