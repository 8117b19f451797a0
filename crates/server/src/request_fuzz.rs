//! Property tests of the embeddings body parser (a stable stand-in for a fuzzer): arbitrary
//! bytes and arbitrary JSON never panic, errors are always `INVALID_INPUT` naming a field,
//! and accepted requests respect the limits. The checked-in corpus under
//! `tests/fuzz-corpus/embeddings` runs first. `PROPTEST_CASES=100000` runs longer.

use super::request::{parse, Inputs};
use model_manager_core::ErrorCode;
use proptest::prelude::*;
use serde_json::{json, Value};

const MAX_INPUTS: usize = 8;

fn check(body: &[u8]) {
    match parse(body, MAX_INPUTS) {
        Ok(request) => {
            let n = request.inputs.len();
            assert!((1..=MAX_INPUTS).contains(&n));
            if let Inputs::Tokens(seqs) = &request.inputs {
                assert!(seqs.iter().all(|s| !s.is_empty()));
            }
            assert!(request.dimensions.is_none_or(|d| d > 0));
        }
        Err(e) => {
            let e = e.error();
            assert_eq!(e.code, ErrorCode::InvalidInput, "{e}");
            assert!(
                e.details.get("field").is_some_and(Value::is_string),
                "{}",
                e.to_json()
            );
        }
    }
}

#[test]
fn the_corpus_parses_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/embeddings");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        check(&std::fs::read(entry.unwrap().path()).unwrap());
        seen += 1;
    }
    assert!(seen >= 10);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        check(&body);
    }

    #[test]
    fn arbitrary_fields_never_panic(
        input in json_value(),
        model in json_value(),
        format in json_value(),
        dimensions in json_value(),
        user in json_value(),
    ) {
        let body = json!({
            "input": input, "model": model, "encoding_format": format,
            "dimensions": dimensions, "user": user,
        });
        check(body.to_string().as_bytes());
    }

    #[test]
    fn token_arrays_parse_exactly(ids in prop::collection::vec(prop::collection::vec(any::<u32>(), 1..5), 1..MAX_INPUTS)) {
        let body = json!({ "input": ids }).to_string();
        let request = parse(body.as_bytes(), MAX_INPUTS).unwrap();
        prop_assert_eq!(request.inputs, Inputs::Tokens(ids));
    }
}
