//! `models.<id>.quantize = "int8"` for candle embeddings: the dense layers of the encoder
//! in int8 ([`crate::encoder::int8`]), smoothed by input maxima observed on calibration
//! texts, and a fidelity gate at load: the same texts embedded in f32 and in int8 must
//! agree (mean cosine, lowest cosine, nearest neighbours kept) or the load is refused
//! (`fidelity = "warn"`: loaded with a warning). When all-int8 misses the gate, the
//! feed-forward down projections (whose GELU inputs carry the widest outliers) stay in f32
//! and the check runs again.

mod cache;
mod fidelity;

pub use fidelity::GATE;

use cache::CalibrationCache;

use crate::embedding::CandleEmbedder;
use crate::encoder::int8::Int8Kernel;
use model_manager_core::{ErrorCode, Fidelity, ModelError, ModelSpec, Quantization, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Option keys of quantization.
pub const OPTION_KEYS: &[&str] = &[
    "quantize",
    "fidelity",
    "calibration_file",
    "int8_kernel",
    "calibration_cache",
];

/// The built-in calibration texts: multilingual, from two words to a paragraph.
const CALIBRATION: &str = include_str!("calibration.txt");
/// SmoothQuant's migration strength: half of the inputs' range moves into the weights.
const SMOOTHING: f32 = 0.5;
/// Fewest calibration texts: each text's neighbours are compared, so a text needs more
/// than `NEIGHBOURS` others for the agreement to mean anything.
const MIN_TEXTS: usize = fidelity::NEIGHBOURS + 2;
/// Most calibration texts read from a file (the check embeds them twice or three times at
/// load); lines past it are left out, with a warning.
const MAX_TEXTS: usize = 4096;
/// Largest calibration file read.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// What each attempt leaves in f32, in order.
const PLANS: [&[&str]; 2] = [&[], &["feed_forward.down"]];

/// What to do when the quantized model misses the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMiss {
    /// Refuse the load (`MODEL_LOAD_ERROR`).
    Refuse,
    /// Load it, with a warning and the figures in status.
    Warn,
}

/// A model's quantization settings.
pub struct QuantizeOptions {
    kernel: Int8Kernel,
    on_miss: OnMiss,
    texts: Vec<String>,
    /// Whether the calibration is kept between loads ([`cache`]).
    cache: bool,
}

fn key(spec: &ModelSpec, name: &str) -> String {
    format!("models.{}.{name}", spec.id)
}

impl QuantizeOptions {
    /// The settings of `spec`, `None` when it is not quantized; `CONFIG_ERROR` for a
    /// scheme, policy or kernel it does not know, a kernel this CPU lacks, or an unusable
    /// calibration file.
    pub fn from_spec(spec: &ModelSpec) -> Result<Option<Self>> {
        match spec.option_str("quantize")? {
            None | Some("none") => return Ok(None),
            Some("int8") => {}
            Some(other) => {
                let key = key(spec, "quantize");
                return Err(ModelError::config(
                    &key,
                    format!("settings key `{key}` expects \"int8\" or \"none\", found \"{other}\""),
                ));
            }
        }
        let on_miss = match spec.option_str("fidelity")? {
            None | Some("refuse") => OnMiss::Refuse,
            Some("warn") => OnMiss::Warn,
            Some(other) => {
                let key = key(spec, "fidelity");
                return Err(ModelError::config(
                    &key,
                    format!(
                        "settings key `{key}` expects \"refuse\" or \"warn\", found \"{other}\""
                    ),
                ));
            }
        };
        Ok(Some(Self {
            kernel: kernel_option(spec)?,
            on_miss,
            texts: calibration_texts(spec)?,
            cache: spec.option_bool("calibration_cache")?.unwrap_or(true),
        }))
    }

    /// The kernel the layers will run.
    pub fn kernel(&self) -> Int8Kernel {
        self.kernel
    }
}

/// `int8_kernel`: `auto` (the fastest this CPU runs) or a kernel by name.
pub fn kernel_option(spec: &ModelSpec) -> Result<Int8Kernel> {
    let key = key(spec, "int8_kernel");
    let kernel = match spec.option_str("int8_kernel")? {
        None | Some("auto") => return Ok(Int8Kernel::detect()),
        Some(name) => Int8Kernel::parse(name).ok_or_else(|| {
            let known: Vec<_> = Int8Kernel::ALL.iter().map(|k| k.name()).collect();
            ModelError::config(
                &key,
                format!(
                    "settings key `{key}` expects auto or one of {}, found \"{name}\"",
                    known.join(", ")
                ),
            )
        })?,
    };
    if !kernel.available() {
        return Err(ModelError::config(
            &key,
            format!(
                "`{key}` = \"{}\": this CPU does not run it (it has {:?})",
                kernel.name(),
                model_manager_core::CpuFeatures::detect().names()
            ),
        ));
    }
    Ok(kernel)
}

/// The built-in texts, or `calibration_file`'s non-empty lines.
fn calibration_texts(spec: &ModelSpec) -> Result<Vec<String>> {
    let Some(path) = spec.option_str("calibration_file")? else {
        return Ok(lines(CALIBRATION));
    };
    let key = key(spec, "calibration_file");
    let unusable = |why: String| {
        ModelError::config(&key, format!("`{key}` = \"{path}\": {why}")).with("file", path)
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| unusable(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(unusable(format!(
            "larger than {} MiB",
            MAX_FILE_BYTES >> 20
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| unusable("not UTF-8 text".into()))?;
    let mut texts = lines(text.strip_prefix('\u{feff}').unwrap_or(&text));
    if texts.len() > MAX_TEXTS {
        tracing::warn!(
            model = spec.id,
            "{key}: using the first {MAX_TEXTS} of its {} texts",
            texts.len()
        );
        texts.truncate(MAX_TEXTS);
    }
    if texts.len() < MIN_TEXTS {
        return Err(unusable(format!(
            "{} texts; the fidelity check needs at least {MIN_TEXTS} (one per line)",
            texts.len()
        )));
    }
    Ok(texts)
}

/// The non-empty lines of `text`, trimmed.
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What `quantize` would report before loading (no figures yet).
pub fn planned(spec: &ModelSpec) -> Option<Quantization> {
    let kernel = match spec.option_str("quantize").ok().flatten()? {
        "int8" => kernel_option(spec).ok()?,
        _ => return None,
    };
    Some(Quantization {
        scheme: "int8".into(),
        kernel: kernel.name().into(),
        f32_layers: Vec::new(),
        fidelity: None,
    })
}

/// Where a model was loaded from: its folder and weight files (they name its calibration
/// in the cache).
pub struct Source<'a> {
    /// The model's folder.
    pub folder: &'a Path,
    /// Its weight files.
    pub weights: &'a [PathBuf],
}

/// Quantizes `embedder`'s encoder as `options` say and checks it against its f32 self.
pub fn quantize(
    embedder: &mut CandleEmbedder,
    options: &QuantizeOptions,
    spec: &ModelSpec,
    source: Source<'_>,
) -> Result<Quantization> {
    let id = spec.id.as_str();
    let texts: Vec<&str> = options.texts.iter().map(String::as_str).collect();
    let cache = match options.cache {
        true => cache::default_dir().and_then(|dir| {
            CalibrationCache::new(&dir, source.folder, source.weights, &spec.options, &texts)
        }),
        false => None,
    };
    let reference = fidelity::Reference::new(calibrated(embedder, &texts, cache.as_ref(), id)?);
    let (figures, keep, in_place) = choose_plan(embedder, options, &texts, &reference, id)?;
    if !figures.passed {
        let message = format!(
            "model `{id}`: int8 misses the fidelity gate: {}; leave models.{id}.quantize unset, or set models.{id}.fidelity = \"warn\" to load it anyway",
            fidelity::describe(&figures)
        );
        if options.on_miss == OnMiss::Refuse {
            return Err(ModelError::new(ErrorCode::ModelLoadError, message)
                .with("mean_cosine", figures.mean_cosine)
                .with("min_cosine", figures.min_cosine)
                .with("neighbour_agreement", figures.neighbour_agreement));
        }
        tracing::warn!(model = id, "{message}");
    }
    let encoder = embedder.packed_mut().ok_or_else(|| not_packed(id))?;
    if !in_place {
        encoder
            .quantize(SMOOTHING, options.kernel, keep)
            .map_err(|e| load_error(id, e))?;
    }
    let saved = encoder.drop_f32().map_err(|e| load_error(id, e))?;
    embedder.forget_bytes(saved);
    Ok(Quantization {
        scheme: "int8".into(),
        kernel: options.kernel.name().into(),
        f32_layers: keep.iter().map(|s| s.to_string()).collect(),
        fidelity: Some(figures),
    })
}

/// The f32 vectors of `texts` with each dense layer's input maxima recorded: the kept ones
/// when `cache` has them for this model and these texts, else from a calibration pass
/// (then kept).
fn calibrated(
    embedder: &CandleEmbedder,
    texts: &[&str],
    cache: Option<&CalibrationCache>,
    id: &str,
) -> Result<Vec<Vec<f32>>> {
    let encoder = embedder.packed().ok_or_else(|| not_packed(id))?;
    let shape = cache::Shape {
        layer_inputs: encoder.input_widths(),
        texts: texts.len(),
        dimension: embedder.dimension(),
    };
    if let Some(kept) = cache.and_then(|c| c.read(&shape)) {
        if encoder.set_input_maxima(kept.maxima).is_ok() {
            tracing::info!(model = id, "int8 calibration from the cache");
            return Ok(kept.vectors);
        }
        tracing::warn!(
            model = id,
            "a kept int8 calibration holds unusable maxima; calibrating again"
        );
    }
    let vectors = calibrate(embedder, texts, id)?;
    if let Some(cache) = cache {
        cache.write(&encoder.input_maxima(), &vectors);
    }
    Ok(vectors)
}

/// The f32 vectors of `texts`, recording each dense layer's input maxima on the way.
fn calibrate(embedder: &CandleEmbedder, texts: &[&str], id: &str) -> Result<Vec<Vec<f32>>> {
    let encoder = embedder.packed().ok_or_else(|| not_packed(id))?;
    encoder.observe(true);
    let vectors = embedder.pipeline().embed(embedder, texts);
    encoder.observe(false);
    vectors.map_err(|e| {
        load_error(
            id,
            format!("embedding the calibration texts: {}", e.message),
        )
    })
}

/// Tries [`PLANS`] in order until one passes the gate: the plan to keep (a passing one,
/// else the closest), its figures, and whether the encoder is in that state now.
fn choose_plan(
    embedder: &mut CandleEmbedder,
    options: &QuantizeOptions,
    texts: &[&str],
    reference: &fidelity::Reference,
    id: &str,
) -> Result<(Fidelity, &'static [&'static str], bool)> {
    let mut best: Option<(Fidelity, &'static [&'static str])> = None;
    let mut last = PLANS[0];
    for keep in PLANS {
        last = keep;
        let encoder = embedder.packed_mut().ok_or_else(|| not_packed(id))?;
        encoder
            .quantize(SMOOTHING, options.kernel, keep)
            .map_err(|e| load_error(id, e))?;
        let vectors = embedder.pipeline().embed(embedder, texts).map_err(|e| {
            load_error(
                id,
                format!("embedding the calibration texts: {}", e.message),
            )
        })?;
        let figures = fidelity::measure(reference, &vectors);
        tracing::info!(model = id, f32_layers = ?keep, "int8 fidelity: {}", fidelity::describe(&figures));
        let better = best
            .as_ref()
            .is_none_or(|(b, _)| (figures.passed, figures.mean_cosine) > (b.passed, b.mean_cosine));
        if better {
            best = Some((figures, keep));
        }
        if best.as_ref().is_some_and(|(b, _)| b.passed) {
            break;
        }
    }
    let (figures, keep) = best.expect("at least one plan");
    Ok((figures, keep, std::ptr::eq(keep, last)))
}

fn load_error(id: &str, e: impl std::fmt::Display) -> ModelError {
    ModelError::new(
        ErrorCode::ModelLoadError,
        format!("model `{id}`: int8: {e}"),
    )
}

fn not_packed(id: &str) -> ModelError {
    let key = format!("models.{id}.quantize");
    ModelError::config(
        &key,
        format!("`{key}` needs the packed encoder on the CPU in f32 (no `packed = false`, `dtype`, or GPU)"),
    )
}
