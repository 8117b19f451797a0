//! int8 on the real all-MiniLM-L6-v2: the load-time fidelity gate passes and says so in
//! the model's architecture, the vectors stay next to the independent float64 reference,
//! every kernel this CPU runs gives the same vectors, a damaged checkpoint whose int8 form
//! loses its meaning is refused (and loads with `fidelity = "warn"`), and bad settings are
//! `CONFIG_ERROR`s.

#[path = "support/minilm.rs"]
mod minilm;
#[path = "../../../tests/support/reference.rs"]
mod support;
use minilm::{cpu, minilm};
use model_manager_candle::encoder::int8::Int8Kernel;
use model_manager_candle::CandleEmbedder;
use model_manager_core::{ErrorCode, ModelSpec};
use model_manager_text::TextEncoder;
use std::path::Path;

fn spec(folder: &Path, options: &[(&str, &str)]) -> ModelSpec {
    let mut spec = ModelSpec::new("e", "embedding");
    spec.local_path = Some(folder.to_path_buf());
    for (key, value) in options {
        spec.options.insert((*key).into(), (*value).into());
    }
    spec
}

fn load(folder: &Path, options: &[(&str, &str)]) -> model_manager_core::Result<CandleEmbedder> {
    CandleEmbedder::load(&spec(folder, options), &cpu())
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / na / b.iter().map(|y| y * y).sum::<f64>().sqrt()
}

#[test]
fn int8_minilm_passes_its_gate_and_stays_next_to_the_reference() {
    let model = load(&minilm(), &[("quantize", "int8")]).unwrap();
    let q = model.architecture().unwrap().quantization.unwrap();
    let f = q.fidelity.clone().expect("figures after load");
    assert!(
        f.passed
            && f.mean_cosine >= 0.999
            && f.min_cosine >= 0.995
            && f.neighbour_agreement >= 0.95,
        "{q:?}"
    );
    assert_eq!(
        (q.scheme.as_str(), q.kernel.as_str()),
        ("int8", Int8Kernel::detect().name())
    );
    assert_eq!(f.texts, 72, "the built-in calibration set");
    let reference = support::reference();
    let texts: Vec<&str> = reference.iter().map(|(t, _)| t.as_str()).collect();
    let vectors = model.pipeline().embed(&model, &texts).unwrap();
    for ((text, expected), got) in reference.iter().zip(&vectors) {
        let c = cosine(got, expected);
        assert!(c >= 0.995, "{text:?}: cosine {c} to the float64 reference");
    }
    let f32_bytes = load(&minilm(), &[]).unwrap().info().bytes.unwrap();
    let int8_bytes = model.info().bytes.unwrap();
    assert!(
        int8_bytes * 4 < f32_bytes * 3,
        "int8 {int8_bytes} vs f32 {f32_bytes} bytes"
    );
}

#[test]
fn every_kernel_gives_the_same_vectors() {
    let texts = [
        "a short one",
        "The quick brown fox jumps over the lazy dog, twice, and then it rests.",
    ];
    // A short calibration file: the scalar kernel is slow, and only equality matters here.
    let dir = tempfile::tempdir().unwrap();
    let calibration = dir.path().join("texts.txt");
    let lines: Vec<String> = (0..12)
        .map(|i| format!("calibration text {i}, about {}", i * i))
        .collect();
    std::fs::write(&calibration, lines.join("\n")).unwrap();
    let calibration = calibration.display().to_string();
    let mut seen: Option<(Int8Kernel, Vec<Vec<f32>>)> = None;
    for kernel in Int8Kernel::ALL.into_iter().filter(|k| k.available()) {
        let options = [
            ("quantize", "int8"),
            ("int8_kernel", kernel.name()),
            ("calibration_file", calibration.as_str()),
            ("fidelity", "warn"),
        ];
        let model = load(&minilm(), &options).unwrap();
        assert_eq!(model.quantization().unwrap().kernel, kernel.name());
        let vectors = model.pipeline().embed(&model, &texts).unwrap();
        match &seen {
            Some((first, expected)) => assert_eq!(&vectors, expected, "{kernel:?} vs {first:?}"),
            None => seen = Some((kernel, vectors)),
        }
    }
}

/// all-MiniLM-L6-v2 with one weight of every feed-forward up-projection column blown up
/// 200x: f32 still computes with it exactly, but a column's int8 scale then leaves its
/// other weights at zero or one step, so int8 no longer means what f32 does.
fn damaged_minilm(dir: &Path) {
    use safetensors::tensor::{serialize_to_file, TensorView};
    let source = minilm();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() && entry.file_name() != "model.safetensors" {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let one_pooling = source.join("1_Pooling/config.json");
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::copy(one_pooling, dir.join("1_Pooling/config.json")).unwrap();
    let bytes = std::fs::read(source.join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut data: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in tensors.tensors() {
        let mut raw = view.data().to_vec();
        if name.ends_with("intermediate.dense.weight") {
            let (outputs, inputs) = (view.shape()[0], view.shape()[1]);
            for o in 0..outputs {
                let at = 4 * (o * inputs + o % inputs);
                let v = f32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) * 200.0 + 5.0;
                raw[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        data.push((name, view.dtype(), view.shape().to_vec(), raw));
    }
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, dtype, shape, raw)| {
            (
                n.clone(),
                TensorView::new(*dtype, shape.clone(), raw).unwrap(),
            )
        })
        .collect();
    serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

#[test]
fn a_damaged_quantization_is_refused_unless_told_to_warn() {
    let dir = tempfile::tempdir().unwrap();
    damaged_minilm(dir.path());
    load(dir.path(), &[]).expect("the damaged checkpoint loads in f32");
    let error = match load(dir.path(), &[("quantize", "int8")]) {
        Err(e) => e,
        Ok(m) => panic!("loaded: {:?}", m.quantization()),
    };
    assert_eq!(error.code, ErrorCode::ModelLoadError);
    assert!(
        error.message.contains("misses the fidelity gate"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("fidelity = \"warn\""),
        "{}",
        error.message
    );
    let warned = load(dir.path(), &[("quantize", "int8"), ("fidelity", "warn")]).unwrap();
    let q = warned.quantization().unwrap();
    assert!(!q.fidelity.as_ref().unwrap().passed);
    assert_eq!(
        q.f32_layers,
        ["feed_forward.down"],
        "both plans tried, the closer one kept"
    );
}

#[test]
fn bad_quantization_settings_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let few = dir.path().join("few.txt");
    std::fs::write(&few, "one\ntwo\n\n three \n").unwrap();
    let binary = dir.path().join("binary.txt");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x80]).unwrap();
    let (few, binary) = (few.display().to_string(), binary.display().to_string());
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("quantize", "int4")],
        vec![("quantize", "int8"), ("fidelity", "maybe")],
        vec![("quantize", "int8"), ("int8_kernel", "neon")],
        vec![
            ("quantize", "int8"),
            ("calibration_file", "/nonexistent/texts.txt"),
        ],
        vec![("quantize", "int8"), ("calibration_file", &few)],
        vec![("quantize", "int8"), ("calibration_file", &binary)],
        vec![("quantize", "int8"), ("dtype", "f16")],
    ];
    for options in cases {
        let error = load(&minilm(), &options)
            .err()
            .unwrap_or_else(|| panic!("{options:?} loaded"));
        assert_eq!(
            error.code,
            ErrorCode::ConfigError,
            "{options:?}: {}",
            error.message
        );
    }
    let rerank = CandleEmbedder::load_for(
        &spec(&minilm(), &[("quantize", "int8")]),
        &cpu(),
        model_manager_candle::Purpose::Rerank,
    );
    assert_eq!(rerank.err().unwrap().code, ErrorCode::ConfigError);
}

#[test]
fn a_calibration_file_of_ones_own_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("texts.txt");
    let texts: Vec<String> = (0..20)
        .map(|i| {
            format!(
                "support ticket number {i}: my order {} never arrived",
                i * 7
            )
        })
        .collect();
    std::fs::write(&file, texts.join("\n")).unwrap();
    let model = load(
        &minilm(),
        &[
            ("quantize", "int8"),
            ("calibration_file", &file.display().to_string()),
        ],
    )
    .unwrap();
    assert_eq!(
        model
            .quantization()
            .unwrap()
            .fidelity
            .as_ref()
            .unwrap()
            .texts,
        20
    );
}
