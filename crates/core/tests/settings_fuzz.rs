//! Property tests of the settings parser (a stable stand-in for a fuzzer): arbitrary text
//! and arbitrary values for every known key never panic, errors are `CONFIG_ERROR`, and
//! accepted settings hold their documented bounds; `Settings::check_file` finds a problem
//! exactly when the text does not load. The checked-in corpus under
//! `tests/fuzz-corpus/settings` runs first. `PROPTEST_CASES=100000` runs longer.

use model_manager_core::settings::schema::{GLOBAL_KEYS, MODEL_KEYS};
use model_manager_core::{ErrorCode, Settings};
use proptest::prelude::*;

fn check(text: &str) {
    // `mm check`'s reading of the same text agrees: no problem exactly when it loads, and
    // every position it gives is inside the text.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("settings.toml");
    std::fs::write(&file, text).unwrap();
    let report = Settings::check_file(&file);
    let loads = Settings::from_toml_str_with_env(text, ".", []).is_ok();
    assert_eq!(report.problems.is_empty(), loads, "{:?}", report.problems);
    let lines = text.lines().count().max(1) as u64;
    for problem in &report.problems {
        if let Some(line) = problem.details.get("line").and_then(|l| l.as_u64()) {
            assert!((1..=lines + 1).contains(&line), "{problem}");
        }
    }
    match Settings::from_toml_str_with_env(text, ".", []) {
        Ok(settings) => {
            assert!(settings.sharing.max_shared_models >= 1);
            assert!((0.0..=1.0).contains(&settings.gpu_memory_fraction));
            for spec in settings.models.values() {
                assert!(spec.batch_size >= 1 && spec.max_batch_tokens >= 1);
            }
        }
        Err(e) => assert_eq!(e.code, ErrorCode::ConfigError, "{e}"),
    }
}

#[test]
fn the_corpus_parses_without_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus/settings");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        check(&std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default());
        seen += 1;
    }
    assert!(seen >= 10);
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z0-9_./:\\\\\" -]{0,12}".prop_map(|s| format!("{s:?}")),
        prop::collection::vec(any::<u8>(), 0..3).prop_map(|v| format!("{v:?}")),
    ]
}

fn known_key() -> impl Strategy<Value = String> {
    let globals: Vec<String> = GLOBAL_KEYS.iter().map(|k| k.key.to_owned()).collect();
    let models: Vec<String> = MODEL_KEYS
        .iter()
        .map(|k| format!("models.m.{}", k.key))
        .collect();
    prop::sample::select([globals, models].concat())
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        check(&text);
    }

    #[test]
    fn arbitrary_values_of_known_keys_never_panic(
        lines in prop::collection::vec((known_key(), toml_value()), 0..8)
    ) {
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        check(&text);
    }
}
