//! The protocol between the host and a plugin child: framed (a 4-byte little-endian length,
//! then that many bytes of JSON), versioned (the child's first message says its version),
//! one request and one reply at a time.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use model_manager_core::{
    ErrorCode, ImageValue, InferValue, ModelError, NamedValues, PluginRecord, TensorData,
    TensorValue,
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
        /// The host's id for it (unique for the host's lifetime, never reused by another
        /// model, so a request can never reach the wrong model after a restart).
        model: u64,
        /// What the plugin needs to load it.
        config: LoadConfig,
    },
    /// Run a loaded model.
    Infer {
        /// The host's id of the model.
        model: u64,
        /// Named inputs.
        inputs: Vec<(String, WireValue)>,
    },
    /// Drop a loaded model.
    Unload {
        /// The host's id of the model.
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
        /// Whether the library was built with `panic = "abort"`.
        panic_abort: bool,
        /// Its types with their option keys.
        types: Vec<WireType>,
    },
    /// A model was loaded.
    Loaded {
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
    /// A tensor, its elements as little-endian bytes.
    Tensor(WireTensor),
    /// Free-form JSON.
    Json(serde_json::Value),
}

/// A tensor with its elements as base64 little-endian bytes: exact for every value (JSON has
/// no NaN or infinity) and a third of the size of decimal text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireTensor {
    shape: Vec<usize>,
    dtype: String,
    bytes: String,
}

impl From<&TensorValue> for WireTensor {
    fn from(t: &TensorValue) -> Self {
        let bytes: Vec<u8> = match &t.data {
            TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            TensorData::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        Self {
            shape: t.shape.clone(),
            dtype: t.data.dtype().to_owned(),
            bytes: BASE64.encode(bytes),
        }
    }
}

impl TryFrom<WireTensor> for TensorValue {
    type Error = String;

    fn try_from(t: WireTensor) -> Result<Self, String> {
        let bytes = BASE64.decode(&t.bytes).map_err(|e| e.to_string())?;
        fn elements<const N: usize, T>(
            bytes: &[u8],
            from: fn([u8; N]) -> T,
        ) -> Result<Vec<T>, String> {
            if !bytes.len().is_multiple_of(N) {
                return Err(format!(
                    "{} bytes are not whole {N}-byte elements",
                    bytes.len()
                ));
            }
            Ok(bytes
                .chunks_exact(N)
                .map(|c| from(c.try_into().expect("chunks of N bytes")))
                .collect())
        }
        let data = match t.dtype.as_str() {
            "f32" => TensorData::F32(elements(&bytes, f32::from_le_bytes)?),
            "i64" => TensorData::I64(elements(&bytes, i64::from_le_bytes)?),
            "i32" => TensorData::I32(elements(&bytes, i32::from_le_bytes)?),
            other => return Err(format!("unknown tensor dtype {other:?}")),
        };
        Ok(TensorValue {
            shape: t.shape,
            data,
        })
    }
}

/// Named core values for the wire.
pub fn to_wire(values: &NamedValues) -> Vec<(String, WireValue)> {
    values
        .iter()
        .map(|(name, value)| {
            let wire = match value {
                InferValue::Text(t) => WireValue::Text(t.clone()),
                InferValue::Image(i) => WireValue::Image(i.clone()),
                InferValue::Tensor(t) => WireValue::Tensor(t.into()),
                InferValue::Json(j) => WireValue::Json(j.clone()),
            };
            (name.clone(), wire)
        })
        .collect()
}

/// Wire values back to the core's; an error names the value that cannot be read.
pub fn from_wire(values: Vec<(String, WireValue)>) -> Result<NamedValues, String> {
    values
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                WireValue::Text(t) => InferValue::Text(t),
                WireValue::Image(i) => InferValue::Image(i),
                WireValue::Tensor(t) => {
                    InferValue::Tensor(t.try_into().map_err(|e| format!("value `{name}`: {e}"))?)
                }
                WireValue::Json(j) => InferValue::Json(j),
            };
            Ok((name, value))
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

/// Detail keys a child's error keeps: those the host's own code in the child sets. Others
/// (e.g. `signal`, which makes `mm` re-raise a signal, or `retry_after_seconds`) would let
/// the plugin speak for the host, and are dropped.
const CHILD_DETAILS: &[&str] = &[
    "plugin",
    "plugin_code",
    "model_id",
    "model_type",
    "path",
    "reason",
    "panic",
    "key",
    "field",
    "expected",
    "found",
    "expected_version",
    "found_version",
    "first_mismatch",
    "report",
    "error_type",
    "error",
];

impl WireError {
    /// The child's error as the host reports it: a code a plugin may use (see
    /// [`crate::error::PLUGIN_CODES`]; while `opening` the library, also the codes of a
    /// library that cannot be used), else `fallback`; only the details of
    /// [`CHILD_DETAILS`]. The child runs third-party code, which could write any frame.
    pub fn into_error(self, fallback: ErrorCode, opening: bool) -> ModelError {
        let spelled = serde_json::to_value(self.code).unwrap_or_default();
        let spelled = spelled.as_str().unwrap_or_default();
        let opening_code = opening
            && matches!(
                self.code,
                ErrorCode::PluginLoadError | ErrorCode::PluginAbiMismatch
            );
        let code = match opening_code {
            true => self.code,
            false => crate::error::plugin_code(spelled, fallback),
        };
        let mut details: serde_json::Map<String, serde_json::Value> = self
            .details
            .into_iter()
            .filter(|(key, _)| CHILD_DETAILS.contains(&key.as_str()))
            .collect();
        if code != self.code {
            details
                .entry("plugin_code")
                .or_insert_with(|| spelled.into());
        }
        ModelError {
            code,
            message: self.message,
            details,
        }
    }
}

/// Encodes one message as a frame: its length, then its JSON.
pub fn encode_frame(message: &impl Serialize) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|n| *n <= MAX_FRAME_BYTES)
        .ok_or_else(|| std::io::Error::other("message larger than a frame"))?;
    let mut frame = Vec::with_capacity(4 + json.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&json);
    Ok(frame)
}

/// Writes one frame.
pub fn write_frame(out: &mut impl Write, message: &impl Serialize) -> std::io::Result<()> {
    out.write_all(&encode_frame(message)?)?;
    out.flush()
}

/// Reads one frame's JSON bytes; `Ok(None)` at a clean end of stream. The buffer grows with
/// the bytes that arrive, not with the length the peer announced.
pub fn read_frame_bytes(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
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
    let mut bytes = Vec::new();
    input.take(u64::from(len)).read_to_end(&mut bytes)?;
    if bytes.len() != len as usize {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(bytes))
}

/// Reads and decodes one frame; `Ok(None)` at a clean end of stream.
#[cfg(test)]
pub fn read_frame<T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
) -> std::io::Result<Option<T>> {
    match read_frame_bytes(input)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(std::io::Error::other),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_error_cannot_speak_for_the_host() {
        let forged = WireError {
            code: ErrorCode::Unauthorized,
            message: "no".into(),
            details:
                serde_json::json!({"signal": "SIGTERM", "plugin": "evil", "retry_after_seconds": 9})
                    .as_object()
                    .unwrap()
                    .clone(),
        };
        let error = forged.clone().into_error(ErrorCode::InferenceError, false);
        assert_eq!(error.code, ErrorCode::InferenceError);
        assert_eq!(error.details["plugin_code"], "UNAUTHORIZED");
        assert_eq!(error.details["plugin"], "evil");
        assert!(!error.details.contains_key("signal"), "{error:?}");
        assert!(!error.details.contains_key("retry_after_seconds"));
        let mut load = forged;
        load.code = ErrorCode::PluginAbiMismatch;
        assert_eq!(
            load.clone()
                .into_error(ErrorCode::InferenceError, true)
                .code,
            ErrorCode::PluginAbiMismatch,
            "opening the library, its own verdict stands"
        );
        assert_eq!(
            load.into_error(ErrorCode::InferenceError, false).code,
            ErrorCode::InferenceError
        );
        let own = WireError {
            code: ErrorCode::InvalidInput,
            message: "bad".into(),
            details: Default::default(),
        };
        let error = own.into_error(ErrorCode::InferenceError, false);
        assert_eq!(error.code, ErrorCode::InvalidInput);
        assert!(!error.details.contains_key("plugin_code"));
    }

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
        assert_eq!(from_wire(back).unwrap(), values);
        // JSON has no NaN or infinity: tensors cross as bytes, bit for bit.
        let odd = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            f32::MIN_POSITIVE,
        ];
        let tensor = NamedValues::from([(
            "t".to_owned(),
            InferValue::Tensor(TensorValue {
                shape: vec![5],
                data: TensorData::F32(odd.to_vec()),
            }),
        )]);
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &to_wire(&tensor)).unwrap();
        let back: Vec<(String, WireValue)> = read_frame(&mut buffer.as_slice()).unwrap().unwrap();
        let InferValue::Tensor(t) = &from_wire(back).unwrap()["t"] else {
            panic!("a tensor")
        };
        let TensorData::F32(v) = &t.data else {
            panic!("f32")
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(v), bits(&odd));
        // A length larger than what follows is a cut stream, read without allocating it.
        let cut = [0xff, 0xff, 0xff, 0x0f, b'{'];
        assert!(read_frame_bytes(&mut cut.as_slice()).is_err());
        assert!(read_frame::<Reply>(&mut [].as_slice()).unwrap().is_none());
        let huge = (MAX_FRAME_BYTES + 1).to_le_bytes();
        assert!(read_frame::<Reply>(&mut huge.as_slice()).is_err());
        // A length larger than what follows is a cut stream, without allocating the length.
        let cut = [0xff, 0xff, 0xff, 0x0f, b'{'];
        assert!(read_frame_bytes(&mut cut.as_slice()).is_err());
    }
}
