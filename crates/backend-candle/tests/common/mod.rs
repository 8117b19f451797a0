//! Test helpers: a word-level tokenizer for the tiny T5 folders.

use std::collections::HashMap;
use std::path::Path;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::Tokenizer;

/// Writes `dir/tokenizer.json`: `<pad>` = 0, `</s>` = 1, `<unk>` = 2, then `w3`..`w{vocab-1}`,
/// split on whitespace, `</s>` appended like T5's tokenizer does.
pub fn write_word_tokenizer(dir: &Path, vocab: usize) {
    let mut ids: HashMap<String, u32> = HashMap::new();
    for (i, special) in ["<pad>", "</s>", "<unk>"].iter().enumerate() {
        ids.insert(special.to_string(), i as u32);
    }
    for i in 3..vocab {
        ids.insert(format!("w{i}"), i as u32);
    }
    let model = WordLevel::builder()
        .vocab(ids.into_iter().collect())
        .unk_token("<unk>".into())
        .build()
        .unwrap();
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    tokenizer.with_post_processor(Some(
        TemplateProcessing::builder()
            .try_single("$A </s>")
            .unwrap()
            .special_tokens(vec![("</s>", 1)])
            .build()
            .unwrap(),
    ));
    tokenizer.save(dir.join("tokenizer.json"), false).unwrap();
}
