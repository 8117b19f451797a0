//! The custom-vision plugin, built with cargo, trained on scikit-learn's digits and loaded
//! through the manager: held-out images classified through the plugin boundary.

mod support;

use model_manager_core::{
    ErrorCode, ImageValue, InferValue, ModelManager, NamedValues, Settings, TensorData,
};
use model_manager_plugin_host as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::{install, workspace_plugin, workspace_root};

/// Trains a classifier with the plugin's `train-digits` into a fresh folder.
fn trained_model() -> tempfile::TempDir {
    let library = workspace_plugin("mm-plugin-custom-vision");
    let trainer = library.with_file_name("train-digits");
    let data = workspace_root().join("models/digits/data/digits.csv.gz");
    assert!(
        data.is_file(),
        "{} is missing: run scripts/fetch-models.sh",
        data.display()
    );
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(&trainer)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(out.path())
        .status()
        .expect("train-digits runs");
    assert!(status.success());
    out
}

fn manager(library: &Path, model_dir: &Path) -> ModelManager {
    let text = format!(
        "plugins.enabled = true\nplugins.paths = [{:?}]\n\
         models.digits.type = \"custom_vision\"\nmodels.digits.local_path = {:?}\nmodels.digits.top_k = 3\n\
         models.empty.type = \"custom_vision\"\nmodels.empty.local_path = {:?}\n",
        library.display().to_string(),
        model_dir.display().to_string(),
        library.parent().unwrap().display().to_string(),
    );
    ModelManager::new(Settings::from_toml_str(&text, ".").unwrap())
}

fn image_input(bytes: Vec<u8>, format: &str) -> NamedValues {
    let image = ImageValue {
        bytes,
        format: format.into(),
        ..Default::default()
    };
    NamedValues::from([("image".to_owned(), InferValue::Image(image))])
}

/// Input `image` as raw grayscale pixels of the given size.
fn raw_gray_input(bytes: Vec<u8>, width: u32, height: u32) -> NamedValues {
    let image = ImageValue {
        bytes,
        width,
        height,
        channels: 1,
        format: "raw".into(),
    };
    NamedValues::from([("image".to_owned(), InferValue::Image(image))])
}

/// The `labels` output: top-k `{"label", "score"}`.
fn labels_of(out: &NamedValues) -> &Vec<serde_json::Value> {
    match &out["labels"] {
        InferValue::Json(serde_json::Value::Array(labels)) => labels,
        other => panic!("labels are a JSON array: {other:?}"),
    }
}

/// Held-out images with extension `ext` and their labels.
fn held_out(model_dir: &Path, ext: &str) -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(model_dir.join("heldout"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_owned();
            let label = stem.rsplit('_').next().unwrap().to_owned();
            (p, label)
        })
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn held_out_digits_are_classified_through_the_plugin() {
    let model_dir = trained_model();
    let (_dir, library) = install(
        &workspace_plugin("mm-plugin-custom-vision"),
        "libmm_plugin_custom_vision.so",
    );
    let manager = manager(&library, model_dir.path());
    let images = held_out(model_dir.path(), "png");
    assert_eq!(images.len(), 360);
    let mut correct = 0;
    for (path, label) in &images {
        let png = std::fs::read(path).unwrap();
        let out = manager
            .infer("digits", image_input(png, "png"))
            .await
            .unwrap();
        let labels = labels_of(&out);
        assert_eq!(labels.len(), 3);
        let scores: Vec<f64> = labels
            .iter()
            .map(|l| l["score"].as_f64().unwrap())
            .collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
        if labels[0]["label"] == label.as_str() {
            correct += 1;
        }
        let embedding = out["embedding"].as_tensor().unwrap();
        assert_eq!(embedding.shape, vec![1, 64]);
        let TensorData::F32(values) = &embedding.data else {
            panic!("f32 embedding")
        };
        let norm: f32 = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "unit embedding: {norm}");
    }
    let accuracy = correct as f64 / images.len() as f64;
    assert!(accuracy >= 0.9, "held-out accuracy {accuracy}");

    // The same digits as 64x64 JPEGs: decoded, resized back to 8x8 and still recognised.
    let jpegs = held_out(model_dir.path(), "jpg");
    let mut correct = 0;
    for (path, label) in &jpegs {
        let jpeg = std::fs::read(path).unwrap();
        let out = manager
            .infer("digits", image_input(jpeg, "jpeg"))
            .await
            .unwrap();
        if labels_of(&out)[0]["label"] == label.as_str() {
            correct += 1;
        }
    }
    let accuracy = correct as f64 / jpegs.len() as f64;
    assert!(accuracy >= 0.85, "held-out JPEG accuracy {accuracy}");

    let status = manager.get_status().await.unwrap();
    let digits = &status.models["digits"];
    assert_eq!(digits.state, "loaded");
    assert_eq!(digits.load_count, 1);
    assert_eq!(digits.references, 0);
    assert_eq!(status.plugins[0].name, "custom-vision");
}

#[tokio::test]
async fn bad_images_and_missing_weights_are_clear_errors() {
    let model_dir = trained_model();
    let (_dir, library) = install(
        &workspace_plugin("mm-plugin-custom-vision"),
        "libmm_plugin_custom_vision.so",
    );
    let manager = manager(&library, model_dir.path());
    let err = manager
        .infer("digits", image_input(b"not an image".to_vec(), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput, "{err}");

    let huge = raw_gray_input(vec![0; 16], 100_000, 100_000);
    let err = manager.infer("digits", huge).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput, "{err}");

    let text = NamedValues::from([("image".to_owned(), InferValue::Text("a cat".into()))]);
    let err = manager.infer("digits", text).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput, "{err}");

    // A raw 8x8 grayscale image works as well as a PNG.
    let raw = raw_gray_input(vec![0; 64], 8, 8);
    assert!(manager.infer("digits", raw).await.is_ok());

    let err = manager.get_model("empty").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ModelNotFound, "{err}");
}
