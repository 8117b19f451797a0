//! The core's inference values to the plugin SDK's and back.

use model_manager_core::{ImageValue, InferValue, NamedValues, TensorData, TensorValue};
use model_manager_plugin as sdk;

fn tensor_to_sdk(t: &TensorValue) -> sdk::Tensor {
    sdk::Tensor {
        shape: t.shape.clone(),
        data: match &t.data {
            TensorData::F32(v) => sdk::TensorData::F32(v.clone()),
            TensorData::I64(v) => sdk::TensorData::I64(v.clone()),
            TensorData::I32(v) => sdk::TensorData::I32(v.clone()),
        },
    }
}

fn tensor_from_sdk(t: sdk::Tensor) -> TensorValue {
    TensorValue {
        shape: t.shape,
        data: match t.data {
            sdk::TensorData::F32(v) => TensorData::F32(v),
            sdk::TensorData::I64(v) => TensorData::I64(v),
            sdk::TensorData::I32(v) => TensorData::I32(v),
        },
    }
}

/// Core values to the SDK's.
pub fn to_sdk(values: &NamedValues) -> sdk::Values {
    values
        .iter()
        .map(|(name, value)| {
            let value = match value {
                InferValue::Tensor(t) => sdk::Value::Tensor(tensor_to_sdk(t)),
                InferValue::Image(i) => sdk::Value::Image(sdk::Image {
                    bytes: i.bytes.clone(),
                    width: i.width,
                    height: i.height,
                    channels: i.channels,
                    format: i.format.clone(),
                }),
                InferValue::Text(t) => sdk::Value::Text(t.clone()),
                InferValue::Json(j) => sdk::Value::Json(j.clone()),
            };
            (name.clone(), value)
        })
        .collect()
}

/// SDK values to the core's.
pub fn from_sdk(values: sdk::Values) -> NamedValues {
    values
        .into_iter()
        .map(|(name, value)| {
            let value = match value {
                sdk::Value::Tensor(t) => InferValue::Tensor(tensor_from_sdk(t)),
                sdk::Value::Image(i) => InferValue::Image(ImageValue {
                    bytes: i.bytes,
                    width: i.width,
                    height: i.height,
                    channels: i.channels,
                    format: i.format,
                }),
                sdk::Value::Text(t) => InferValue::Text(t),
                sdk::Value::Json(j) => InferValue::Json(j),
            };
            (name, value)
        })
        .collect()
}
