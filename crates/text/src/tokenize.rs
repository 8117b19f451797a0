//! Tokenization with the model's `tokenizer.json`, ignoring the padding and truncation baked
//! into the file: sentence-transformers pads per batch and truncates at `max_seq_length`.

use model_manager_core::backend::TokenizedText;
use model_manager_core::{ErrorCode, ModelError, Result};
use std::path::Path;
use tokenizers::normalizers::{Lowercase, Sequence};
use tokenizers::{Encoding, NormalizerWrapper, Tokenizer, TruncationParams};

/// Inputs from which a batch is tokenized across rayon's pool (see `encode_inputs`).
const PARALLEL_FROM_INPUTS: usize = 16;

/// Bytes of text tokenized at first per token of the limit. English averages under five
/// bytes a token, so this prefix nearly always holds every token that is kept; when it does
/// not, the prefix doubles until it does (see [`TextTokenizer::encode`]).
const PREFIX_BYTES_PER_TOKEN: usize = 16;

/// A tokenizer that truncates at `max_length` tokens and never pads.
pub struct TextTokenizer {
    inner: Tokenizer,
    max_length: usize,
    pad_id: u32,
}

impl TextTokenizer {
    /// Loads `path` (a `tokenizer.json`); a missing file is `MODEL_NOT_FOUND`, a bad one
    /// `MODEL_LOAD_ERROR`, both naming the file.
    pub fn from_file(path: &Path, max_length: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(ModelError::new(
                ErrorCode::ModelNotFound,
                format!("tokenizer file {} not found", path.display()),
            )
            .with("file", path.display().to_string()));
        }
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| ModelError::file_load(ErrorCode::ModelLoadError, path, e))?;
        let pad_id = inner.get_padding().map_or(0, |p| p.pad_id);
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| ModelError::file_load(ErrorCode::ModelLoadError, path, e))?;
        Ok(Self {
            inner,
            max_length,
            pad_id,
        })
    }

    /// Lowercases texts first, unless the tokenizer already does (sentence-transformers'
    /// `do_lower_case`).
    pub fn lowercased(mut self) -> Result<Self> {
        let current = self.inner.get_normalizer().cloned();
        if current.as_ref().is_some_and(lowercases) {
            return Ok(self);
        }
        let mut steps = vec![NormalizerWrapper::Lowercase(Lowercase)];
        match current {
            Some(NormalizerWrapper::Sequence(seq)) => steps.extend(seq),
            Some(other) => steps.push(other),
            None => {}
        }
        self.inner
            .with_normalizer(Some(Sequence::new(steps)))
            .map_err(|e| {
                ModelError::new(
                    ErrorCode::ModelLoadError,
                    format!("cannot lowercase the tokenizer's input: {e}"),
                )
            })?;
        Ok(self)
    }

    /// Tokenizes `prompt` followed by each text, as one string each (as sentence-
    /// transformers does), and records the prompt's length in tokens: its special tokens
    /// included, less a trailing special token (`[SEP]`, `</s>`, an end-of-text).
    pub fn encode_with_prompt(&self, prompt: &str, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        if prompt.is_empty() {
            return self.encode(texts);
        }
        let alone = self.encode_all(&[prompt])?.remove(0);
        let trailing_special = alone.get_special_tokens_mask().last() == Some(&1);
        let prompt_tokens = alone.get_ids().len() - usize::from(trailing_special);
        let joined: Vec<String> = texts.iter().map(|t| format!("{prompt}{t}")).collect();
        let refs: Vec<&str> = joined.iter().map(String::as_str).collect();
        let mut out = self.encode(&refs)?;
        out.iter_mut().for_each(|t| t.prompt_tokens = prompt_tokens);
        Ok(out)
    }

    /// Tokenizes each pair with the tokenizer's pair template, cut longest-first at
    /// `max_length` (as sentence-transformers' cross-encoders and text-embeddings-inference
    /// do).
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<Vec<TokenizedText>> {
        let inputs: Vec<tokenizers::EncodeInput> =
            pairs.iter().map(|&(a, b)| (a, b).into()).collect();
        let encodings = self.encode_inputs(inputs)?;
        Ok(encodings
            .iter()
            .map(|e| TokenizedText::new(e.get_ids().to_vec(), e.get_type_ids().to_vec()))
            .collect())
    }

    /// The id used for padding.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Longest sequence produced, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The underlying Hugging Face tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Tokenizes `texts` with special tokens, truncating each at `max_length`.
    ///
    /// A long text is tokenized from a prefix, so a 2 MiB string costs about what a
    /// 256-token text costs. The prefix is accepted only when it provably yields the same
    /// kept tokens as the whole text: the limit is reached, and every kept token ends before
    /// the prefix's last whitespace (tokenizers split words at whitespace, so the word the
    /// cut went through cannot change the tokens before it). Otherwise the prefix doubles.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<TokenizedText>> {
        let mut limit = self.max_length.max(1) * PREFIX_BYTES_PER_TOKEN;
        let mut out: Vec<Option<TokenizedText>> = vec![None; texts.len()];
        let mut todo: Vec<usize> = (0..texts.len()).collect();
        while !todo.is_empty() {
            let prefixes: Vec<&str> = todo.iter().map(|&i| prefix(texts[i], limit)).collect();
            let encodings = self.encode_all(&prefixes)?;
            let mut retry = Vec::new();
            for ((i, cut), encoding) in todo.into_iter().zip(prefixes).zip(encodings) {
                let whole = cut.len() == texts[i].len();
                if whole || self.prefix_is_enough(cut, &encoding) {
                    out[i] = Some(TokenizedText::new(
                        encoding.get_ids().to_vec(),
                        encoding.get_type_ids().to_vec(),
                    ));
                } else {
                    retry.push(i);
                }
            }
            todo = retry;
            limit = limit.saturating_mul(2);
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn encode_all(&self, texts: &[&str]) -> Result<Vec<Encoding>> {
        self.encode_inputs(texts.to_vec())
    }

    /// A few inputs are encoded on the calling thread: `encode_batch` hands every batch to
    /// rayon's pool and waits, and while a forward pass runs that pool is busy with it, so a
    /// server request's one text would wait for a pass's fork to finish and cost two context
    /// switches. Many inputs are worth the pool.
    fn encode_inputs<'s, E>(&self, inputs: Vec<E>) -> Result<Vec<Encoding>>
    where
        E: Into<tokenizers::EncodeInput<'s>> + Send,
    {
        let encoded = if inputs.len() < PARALLEL_FROM_INPUTS {
            inputs
                .into_iter()
                .map(|input| self.inner.encode(input, true))
                .collect()
        } else {
            self.inner.encode_batch(inputs, true)
        };
        encoded.map_err(|e| {
            ModelError::new(
                ErrorCode::GenerateEmbeddingsError,
                format!("tokenization failed: {e}"),
            )
        })
    }

    /// Whether the tokens kept from `cut` (a prefix) are those of the whole text.
    fn prefix_is_enough(&self, cut: &str, encoding: &Encoding) -> bool {
        if encoding.get_ids().len() < self.max_length {
            return false;
        }
        let kept_end = encoding
            .get_offsets()
            .iter()
            .zip(encoding.get_special_tokens_mask())
            .filter(|(_, &special)| special == 0)
            .map(|(&(_, end), _)| end)
            .max()
            .unwrap_or(0);
        cut.get(kept_end..)
            .is_some_and(|rest| rest.contains(char::is_whitespace))
    }
}

/// Whether a normalizer lowercases (itself, or one step of a sequence).
fn lowercases(normalizer: &NormalizerWrapper) -> bool {
    match normalizer {
        NormalizerWrapper::Lowercase(_) => true,
        NormalizerWrapper::BertNormalizer(b) => b.lowercase,
        NormalizerWrapper::Sequence(seq) => seq.as_ref().iter().any(lowercases),
        _ => false,
    }
}

/// The first `limit` bytes of `text`, cut back to a character boundary.
fn prefix(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::{prefix, TextTokenizer, TokenizedText, PARALLEL_FROM_INPUTS};
    use std::path::Path;

    /// A batch large enough for the pool and the same texts a few at a time on the calling
    /// thread give the same tokens, for single texts and for pairs.
    #[test]
    fn few_and_many_inputs_tokenize_alike() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/all-MiniLM-L6-v2/tokenizer.json");
        let tokenizer = TextTokenizer::from_file(&path, 64)
            .expect("MiniLM's tokenizer (scripts/fetch-models.sh)");
        let texts: Vec<String> = (0..3 * PARALLEL_FROM_INPUTS)
            .map(|i| format!("Text {i}: {}", "naïve café, 東京 ".repeat(i)))
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let together = tokenized_alike(&texts, 3, |few| tokenizer.encode(few).unwrap());
        assert!(
            together.iter().any(|t| t.len() == 64),
            "some texts reach the limit"
        );
        let pairs: Vec<(&str, &str)> = texts.iter().map(|t| ("a query", *t)).collect();
        tokenized_alike(&pairs, 2, |few| tokenizer.encode_pairs(few).unwrap());
    }

    /// `items` encoded at once and `few` at a time give the same tokens; those tokens.
    fn tokenized_alike<T>(
        items: &[T],
        few: usize,
        encode: impl Fn(&[T]) -> Vec<TokenizedText>,
    ) -> Vec<TokenizedText> {
        let together = encode(items);
        let apart: Vec<_> = items.chunks(few).flat_map(&encode).collect();
        assert_eq!(together, apart);
        together
    }

    #[test]
    fn prefix_cuts_on_a_char_boundary() {
        assert_eq!(prefix("héllo", 2), "h");
        assert_eq!(prefix("héllo", 3), "hé");
        assert_eq!(prefix("hi", 10), "hi");
    }
}
