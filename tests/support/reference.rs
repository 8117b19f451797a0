//! The reference embeddings of all-MiniLM-L6-v2 (tests/fixtures/minilm_reference.json,
//! computed by an independent float64 forward pass), for the backends' tests (included with
//! `#[path]`).

use std::path::PathBuf;

/// `(text, embedding)` of every reference item.
pub fn reference() -> Vec<(String, Vec<f64>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/minilm_reference.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let v = item["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (item["text"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}
