//! The values of model-manager's generic inference: what `Infer` models and plugins take and
//! return. One definition for the host (`model-manager-core` re-exports them) and the plugin
//! SDK (`model-manager-plugin` re-exports them as `Value`, `Tensor`, `Image`), so no
//! conversion runs between the two.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The values of a tensor, by element type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dtype", content = "data", rename_all = "lowercase")]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit integers.
    I64(Vec<i64>),
    /// 32-bit integers.
    I32(Vec<i32>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
            TensorData::I32(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type as written in JSON (`f32`, `i64`, `i32`).
    pub fn dtype(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "f32",
            TensorData::I64(_) => "i64",
            TensorData::I32(_) => "i32",
        }
    }
}

/// A tensor crossing a generic inference call: a shape and row-major data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorValue {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major; their count is the product of `shape`.
    #[serde(flatten)]
    pub data: TensorData,
}

/// Most dimensions a tensor may have (as NumPy before 2.0; ONNX models use a handful).
pub const MAX_TENSOR_RANK: usize = 32;

impl TensorValue {
    /// The element count, once the shape is checked against the data: at most
    /// [`MAX_TENSOR_RANK`] dimensions, the product of the dimensions (without overflow)
    /// the number of values, and the product of the non-zero ones within `i64` (ONNX
    /// Runtime takes dimensions as `i64`: `[0, 2^63]` holds no element, but would reach a
    /// model as a negative dimension). A model can then index by the shape without reading
    /// past the data.
    pub fn checked_len(&self) -> Result<usize, String> {
        let rank = self.shape.len();
        if rank > MAX_TENSOR_RANK {
            return Err(format!(
                "a shape of {rank} dimensions; at most {MAX_TENSOR_RANK} are taken"
            ));
        }
        let nonzero = self
            .shape
            .iter()
            .filter(|&&d| d > 0)
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
            .filter(|n| *n <= i64::MAX as u64);
        let stated = self
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|_| nonzero.is_some())
            .ok_or_else(|| format!("shape {:?} holds more elements than memory", self.shape))?;
        if stated != self.data.len() {
            return Err(format!(
                "shape {:?} holds {stated} elements, but data has {} {} values",
                self.shape,
                self.data.len(),
                self.data.dtype()
            ));
        }
        Ok(stated)
    }
}

/// An image for generic inference: encoded file bytes (`format` png, jpeg…) or raw pixels
/// (`format` raw, with width, height and channels). In JSON the bytes are base64.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageValue {
    /// The bytes, base64 in JSON.
    #[serde(rename = "base64", with = "base64_bytes")]
    pub bytes: Vec<u8>,
    /// Pixels per row; 0 when the decoder finds out.
    #[serde(default)]
    pub width: u32,
    /// Rows; 0 when the decoder finds out.
    #[serde(default)]
    pub height: u32,
    /// Channels per pixel; 0 when the decoder finds out.
    #[serde(default)]
    pub channels: u32,
    /// `png`, `jpeg`, `raw`, or empty to let the model guess.
    #[serde(default)]
    pub format: String,
}

impl ImageValue {
    /// Whether this is raw pixels: `format` `raw`, in any case.
    pub fn is_raw(&self) -> bool {
        self.format.eq_ignore_ascii_case("raw")
    }

    /// The byte count, once checked: raw pixels must be exactly width × height × channels
    /// bytes (each at least 1), so a model that trusts the dimensions neither reads past the
    /// bytes nor allocates for pixels that are not there. An encoded image carries its own
    /// dimensions: one that states width, height or channels is refused too (a model
    /// that took it as raw would trust them unchecked).
    pub fn checked_len(&self) -> Result<usize, String> {
        let (w, h, c) = (self.width as u64, self.height as u64, self.channels as u64);
        if !self.is_raw() {
            if w != 0 || h != 0 || c != 0 {
                return Err(
                    "width, height and channels are for raw pixels (`format` raw); an encoded image (png, jpeg) carries its own"
                        .to_owned(),
                );
            }
            return Ok(self.bytes.len());
        }
        if w == 0 || h == 0 || c == 0 {
            return Err("a raw image needs width, height and channels".to_owned());
        }
        let stated = w.checked_mul(h).and_then(|n| n.checked_mul(c));
        if stated != Some(self.bytes.len() as u64) {
            let stated = stated.map_or("more than memory holds".to_owned(), |n| {
                format!("{n} bytes")
            });
            return Err(format!(
                "a raw image of {w} x {h} x {c} is {stated}, but {} bytes were given",
                self.bytes.len()
            ));
        }
        Ok(self.bytes.len())
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// One named input or output of generic inference. In JSON: a tensor is
/// `{"shape", "dtype", "data"}`, an image `{"base64", "format", …}`, text a string, and
/// anything else free-form JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InferValue {
    /// A tensor.
    Tensor(TensorValue),
    /// An image.
    Image(ImageValue),
    /// Text.
    Text(String),
    /// Free-form JSON (labels, scores, options…).
    Json(serde_json::Value),
}

impl InferValue {
    /// The text, if this is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            InferValue::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The image, if this is one.
    pub fn as_image(&self) -> Option<&ImageValue> {
        match self {
            InferValue::Image(i) => Some(i),
            _ => None,
        }
    }

    /// The tensor, if this is one.
    pub fn as_tensor(&self) -> Option<&TensorValue> {
        match self {
            InferValue::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// The elements the value carries (tensor values, image bytes; none for text and
    /// JSON), once a tensor's shape and a raw image's dimensions are checked against their
    /// data.
    pub fn checked_len(&self) -> Result<usize, String> {
        match self {
            InferValue::Tensor(t) => t.checked_len(),
            InferValue::Image(i) => i.checked_len(),
            InferValue::Text(_) | InferValue::Json(_) => Ok(0),
        }
    }

    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            InferValue::Tensor(_) => "a tensor",
            InferValue::Image(_) => "an image",
            InferValue::Text(_) => "text",
            InferValue::Json(_) => "JSON",
        }
    }
}

/// Values by name: the inputs or outputs of generic inference.
pub type NamedValues = BTreeMap<String, InferValue>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_raw_dimensions_must_match_their_data() {
        let tensor = |shape: Vec<usize>, n: usize| TensorValue {
            shape,
            data: TensorData::F32(vec![0.0; n]),
        };
        assert_eq!(tensor(vec![2, 3], 6).checked_len(), Ok(6));
        assert_eq!(tensor(vec![], 1).checked_len(), Ok(1));
        assert_eq!(tensor(vec![2, 0], 0).checked_len(), Ok(0));
        assert!(tensor(vec![2, 2], 3).checked_len().is_err());
        assert!(tensor(vec![usize::MAX, 2], 1).checked_len().is_err());
        let image = |format: &str, w, h, c, n| ImageValue {
            bytes: vec![0; n],
            width: w,
            height: h,
            channels: c,
            format: format.into(),
        };
        assert_eq!(image("raw", 2, 2, 3, 12).checked_len(), Ok(12));
        assert!(image("raw", 1000, 1000, 3, 9).checked_len().is_err());
        assert!(image("raw", u32::MAX, u32::MAX, u32::MAX, 9)
            .checked_len()
            .is_err());
        assert!(image("raw", 0, 2, 3, 0).checked_len().is_err());
        assert_eq!(image("png", 0, 0, 0, 9).checked_len(), Ok(9));
        // Raw in any case is raw, and checked.
        assert_eq!(image("RAW", 2, 2, 3, 12).checked_len(), Ok(12));
        assert!(image("Raw", 1000, 1000, 3, 9).checked_len().is_err());
        // Dimensions on anything else (a plugin might take it as raw) are refused.
        for format in ["png", "", "rgb"] {
            assert!(
                image(format, 1000, 1000, 3, 9).checked_len().is_err(),
                "{format:?}"
            );
            assert!(
                image(format, 0, 0, 3, 9).checked_len().is_err(),
                "{format:?}"
            );
        }
    }

    #[test]
    fn a_shape_is_bounded_in_rank_and_fits_onnx_s_i64_dimensions() {
        let tensor = |shape: Vec<usize>| TensorValue {
            shape,
            data: TensorData::F32(Vec::new()),
        };
        assert_eq!(tensor(vec![0; MAX_TENSOR_RANK]).checked_len(), Ok(0));
        let too_many = tensor(vec![1; MAX_TENSOR_RANK + 1]).checked_len();
        assert!(too_many.unwrap_err().contains("at most 32"));
        // No element, but a dimension ONNX would see as negative.
        assert!(tensor(vec![0, 1 << 63]).checked_len().is_err());
        assert!(tensor(vec![0, 1 << 62, 2]).checked_len().is_err());
        assert_eq!(tensor(vec![0, (1 << 62) - 1, 2]).checked_len(), Ok(0));
    }
}
