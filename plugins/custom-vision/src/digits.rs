//! The 8x8 handwritten digits data set shipped in scikit-learn's wheel
//! (`sklearn/datasets/data/digits.csv.gz`: 64 pixel values 0..=16 and the digit per row).

use std::io::Read;
use std::path::Path;

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Digit {
    /// Row-major 8x8 grayscale pixels scaled from 0..=16 to 0..=255.
    pub pixels: Vec<u8>,
    /// The digit, 0..=9.
    pub label: u32,
}

/// Reads the gzipped CSV.
pub fn read(path: &Path) -> Result<Vec<Digit>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| format!("{} is not gzipped text: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            parse_row(line).map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}

fn parse_row(line: &str) -> Result<Digit, String> {
    let values: Vec<f32> = line
        .split(',')
        .map(|v| v.trim().parse::<f32>().map_err(|e| format!("`{v}`: {e}")))
        .collect::<Result<_, _>>()?;
    if values.len() != 65 {
        return Err(format!("expected 65 values, found {}", values.len()));
    }
    Ok(Digit {
        pixels: values[..64]
            .iter()
            .map(|v| (v / 16.0 * 255.0).round() as u8)
            .collect(),
        label: values[64] as u32,
    })
}

/// Splits into (train, held-out): every fifth sample is held out, so both halves cover all
/// writers and digits and the split is the same on every run.
pub fn split(digits: Vec<Digit>) -> (Vec<Digit>, Vec<Digit>) {
    let (held_out, train): (Vec<_>, Vec<_>) = digits
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 5 == 0);
    (
        train.into_iter().map(|(_, d)| d).collect(),
        held_out.into_iter().map(|(_, d)| d).collect(),
    )
}

fn encode(image: &image::GrayImage, format: image::ImageFormat) -> Vec<u8> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), format)
        .expect("encoding an image in memory");
    bytes
}

fn gray(digit: &Digit) -> image::GrayImage {
    image::GrayImage::from_raw(8, 8, digit.pixels.clone()).expect("64 pixels")
}

/// The sample as an 8x8 grayscale PNG.
pub fn to_png(digit: &Digit) -> Vec<u8> {
    encode(&gray(digit), image::ImageFormat::Png)
}

/// The sample scaled to 64x64 as a JPEG, as a photo of a digit would arrive: the
/// classifier must decode, and resize it back down.
pub fn to_large_jpeg(digit: &Digit) -> Vec<u8> {
    let large = image::imageops::resize(&gray(digit), 64, 64, image::imageops::FilterType::Nearest);
    encode(&large, image::ImageFormat::Jpeg)
}
