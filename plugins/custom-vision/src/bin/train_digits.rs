//! Trains the `custom_vision` digits classifier and writes a model folder for the plugin.
//!
//!     train-digits --data models/digits/data/digits.csv.gz --out models/digits-classifier
//!
//! Writes `model.safetensors`, `config.json`, and the held-out split as PNGs named
//! `heldout/<index>_<label>.png` (plus 64x64 JPEGs of the same images, `.jpg`), then prints
//! the held-out accuracy.

use mm_plugin_custom_vision::{classifier::Classifier, digits, train};
use std::path::PathBuf;
use std::process::ExitCode;

struct Args {
    data: PathBuf,
    out: PathBuf,
    epochs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        data: PathBuf::from("models/digits/data/digits.csv.gz"),
        out: PathBuf::from("models/digits-classifier"),
        epochs: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => args.data = value()?.into(),
            "--out" => args.out = value()?.into(),
            "--epochs" => args.epochs = value()?.parse().map_err(|e| format!("--epochs: {e}"))?,
            "-h" | "--help" => {
                return Err(
                    "usage: train-digits [--data digits.csv.gz] [--out DIR] [--epochs N]".into(),
                )
            }
            other => return Err(format!("unknown argument `{other}`; see --help")),
        }
    }
    Ok(args)
}

fn run(args: &Args) -> Result<f64, String> {
    let (train_set, held_out) = digits::split(digits::read(&args.data)?);
    let config = train::digits_config();
    let weights = train::train(&train_set, &config, args.epochs).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(args.out.join("heldout")).map_err(|e| e.to_string())?;
    candle_core::safetensors::save(&weights, args.out.join("model.safetensors"))
        .map_err(|e| e.to_string())?;
    let config_json = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("config.json"), config_json).map_err(|e| e.to_string())?;
    for (i, digit) in held_out.iter().enumerate() {
        let path = args.out.join(format!("heldout/{i:04}_{}.png", digit.label));
        std::fs::write(&path, digits::to_png(digit)).map_err(|e| e.to_string())?;
        std::fs::write(path.with_extension("jpg"), digits::to_large_jpeg(digit))
            .map_err(|e| e.to_string())?;
    }
    let classifier = Classifier::from_weights(weights, config).map_err(|e| e.message)?;
    let train_accuracy = train::accuracy(&classifier, &train_set).map_err(|e| e.message)?;
    let accuracy = train::accuracy(&classifier, &held_out).map_err(|e| e.message)?;
    println!(
        "trained on {} digits: train accuracy {train_accuracy:.4}, held-out accuracy {accuracy:.4} ({} images)",
        train_set.len(),
        held_out.len()
    );
    println!("wrote {}", args.out.display());
    Ok(accuracy)
}

fn main() -> ExitCode {
    match parse_args().and_then(|args| run(&args)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("train-digits: {e}");
            ExitCode::FAILURE
        }
    }
}
