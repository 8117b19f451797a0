//! The protocol between the host and a plugin child: framed (a 4-byte little-endian length,
//! then that many bytes of JSON), versioned (the child's first message says its version),
//! one request and one reply at a time.

use model_manager_core::{
    ErrorCode, ImageValue, InferValue, ModelError, NamedValues, PluginRecord, TensorValue,
};
use model_manager_plugin::LoadConfig;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Version of this protocol; the host refuses a child that speaks another.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side accepts (values are bounded by the server's limits long
/// before this; a larger length means a corrupt stream).
const MAX_FRAME_BYTES: u32 = 1 << 30;

/// What the host asks of a child.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Load a model of one of the plugin's types.
    Load {
        /// What the plugin needs to load it.
        config: LoadConfig,
    },
    /// Run a loaded model.
    Infer {
        /// The child's handle of the model.
        model: u64,
        /// Named inputs.
        inputs: Vec<(String, WireValue)>,
    },
    /// Drop a loaded model.
    Unload {
        /// The child's handle of the model.
        model: u64,
    },
}

/// One model type of the plugin, with the option keys the host checks settings against.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireType {
    /// Registry key.
    pub model_type: String,
    /// Keys it reads under `models.<id>.`.
    pub option_keys: Vec<String>,
}

/// What a child answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// The child's first message: the protocol it speaks and the plugin it opened.
    Hello {
        /// [`PROTOCOL_VERSION`] of the child.
        protocol: u32,
        /// The library, as the in-process host would record it.
        record: PluginRecord,
        /// Its types with their option keys.
        types: Vec<WireType>,
    },
    /// A model was loaded.
    Loaded {
        /// Its handle in the child.
        model: u64,
        /// What the plugin reports the model holds (0: unknown).
        memory_bytes: u64,
    },
    /// A model's outputs.
    Outputs {
        /// Named outputs.
        outputs: Vec<(String, WireValue)>,
    },
    /// Done (unload).
    Done,
    /// The request failed with a coded error.
    Failed {
        /// The error.
        error: WireError,
    },
}

/// An inference value with its kind spelled out (the core's JSON form is untagged, which
/// cannot tell a JSON string from a text).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireValue {
    /// Text.
    Text(String),
    /// An image (bytes base64).
    Image(ImageValue),
    /// A tensor.
    Tensor(TensorValue),
    /// Free-form JSON.
    Json(serde_json::Value),
}

/// Named core values for the wire.
pub fn to_wire(values: &NamedValues) -> Vec<(String, WireValue)> {
    values
        .iter()
        .map(|(name, value)| {
            let wire = match value {
                InferValue::Text(t) => WireValue::Text(t.clone()),
                InferValue::Image(i) => WireValue::Image(i.clone()),
                InferValue::Tensor(t) => WireValue::Tensor(t.clone()),
                InferValue::Json(j) => WireValue::Json(j.clone()),
            };
            (name.clone(), wire)
        })
        .collect()
}

/// Wire values back to the core's.
pub fn from_wire(values: Vec<(String, WireValue)>) -> NamedValues {
    values
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                WireValue::Text(t) => InferValue::Text(t),
                WireValue::Image(i) => InferValue::Image(i),
                WireValue::Tensor(t) => InferValue::Tensor(t),
                WireValue::Json(j) => InferValue::Json(j),
            };
            (name, value)
        })
        .collect()
}

/// A [`ModelError`] on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    /// The error code.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// Context.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl From<ModelError> for WireError {
    fn from(e: ModelError) -> Self {
        Self {
            code: e.code,
            message: e.message,
            details: e.details,
        }
    }
}

impl From<WireError> for ModelError {
    fn from(e: WireError) -> Self {
        ModelError {
            code: e.code,
            message: e.message,
            details: e.details,
        }
    }
}

/// Writes one frame.
pub fn write_frame(out: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|n| *n <= MAX_FRAME_BYTES)
        .ok_or_else(|| std::io::Error::other("message larger than a frame"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&bytes)?;
    out.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame<T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME_BYTES {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut bytes = vec![0u8; len as usize];
    input.read_exact(&mut bytes)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_exactly_through_frames() {
        let values = NamedValues::from([
            ("a".to_owned(), InferValue::Text("hi".into())),
            ("b".to_owned(), InferValue::Json(serde_json::json!("hi"))),
            (
                "c".to_owned(),
                InferValue::Tensor(TensorValue {
                    shape: vec![2],
                    data: model_manager_core::TensorData::F32(vec![0.1, -3.5e-8]),
                }),
            ),
        ]);
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &to_wire(&values)).unwrap();
        let back: Vec<(String, WireValue)> = read_frame(&mut buffer.as_slice()).unwrap().unwrap();
        assert_eq!(from_wire(back), values);
        assert!(read_frame::<Reply>(&mut [].as_slice()).unwrap().is_none());
        let huge = (MAX_FRAME_BYTES + 1).to_le_bytes();
        assert!(read_frame::<Reply>(&mut huge.as_slice()).is_err());
    }
}
