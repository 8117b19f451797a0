//! Image bytes to the classifier's input: decode, grayscale, resize, normalize.

use crate::config::ClassifierConfig;
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageReader, Limits};
use model_manager_plugin::{Error, Image};
use std::io::Cursor;

/// Largest side accepted; larger images are refused before they are decoded in full.
pub const MAX_SIDE: u32 = 8192;

fn decode(image: &Image) -> Result<DynamicImage, Error> {
    if image.is_raw() {
        return raw(image);
    }
    let mut reader = ImageReader::new(Cursor::new(&image.bytes));
    reader = match image.format.as_str() {
        "png" => {
            reader.set_format(image::ImageFormat::Png);
            reader
        }
        "jpeg" | "jpg" => {
            reader.set_format(image::ImageFormat::Jpeg);
            reader
        }
        "" => reader
            .with_guessed_format()
            .map_err(|e| Error::invalid_input(format!("cannot read the image: {e}")))?,
        other => {
            return Err(Error::invalid_input(format!(
                "image format `{other}` is not supported; use png, jpeg or raw"
            )))
        }
    };
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(256 * 1024 * 1024);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| Error::invalid_input(format!("cannot decode the image: {e}")))
}

fn raw(image: &Image) -> Result<DynamicImage, Error> {
    let (w, h, c) = (image.width, image.height, image.channels);
    let expected = w as u64 * h as u64 * c as u64;
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE || image.bytes.len() as u64 != expected {
        return Err(Error::invalid_input(format!(
            "a raw image needs width, height and channels (at most {MAX_SIDE} per side) matching \
             its {} bytes; got {w}x{h}x{c}",
            image.bytes.len()
        )));
    }
    let bytes = image.bytes.clone();
    let built = match c {
        1 => image::GrayImage::from_raw(w, h, bytes).map(DynamicImage::ImageLuma8),
        3 => image::RgbImage::from_raw(w, h, bytes).map(DynamicImage::ImageRgb8),
        4 => image::RgbaImage::from_raw(w, h, bytes).map(DynamicImage::ImageRgba8),
        _ => None,
    };
    built
        .ok_or_else(|| Error::invalid_input(format!("raw images have 1, 3 or 4 channels, not {c}")))
}

/// The classifier's input for one image: `width * height` normalized grayscale pixels.
pub fn to_input(image: &Image, config: &ClassifierConfig) -> Result<Vec<f32>, Error> {
    let gray: GrayImage = decode(image)?.to_luma8();
    let gray = if gray.dimensions() == (config.width, config.height) {
        gray
    } else {
        image::imageops::resize(&gray, config.width, config.height, FilterType::Triangle)
    };
    Ok(gray.pixels().map(|p| config.normalize(p.0[0])).collect())
}
