//! Plain SDK values to ABI-stable ones and back. Both sides of the boundary use these, so a
//! value means the same in the host and in every plugin.

use crate::abi::{
    AbiError, AbiImage, AbiManifest, AbiNamedValue, AbiTensor, AbiTensorData, AbiTypeDecl, AbiValue,
};
use crate::sdk::{Error, Image, PluginInfo, Tensor, TensorData, TypeDeclaration, Value, Values};
use abi_stable::std_types::{RString, RVec};

impl From<Error> for AbiError {
    fn from(e: Error) -> Self {
        AbiError {
            code: e.code.into(),
            message: e.message.into(),
        }
    }
}

impl From<AbiError> for Error {
    fn from(e: AbiError) -> Self {
        Error {
            code: e.code.into(),
            message: e.message.into(),
        }
    }
}

impl From<Image> for AbiImage {
    fn from(i: Image) -> Self {
        AbiImage {
            bytes: i.bytes.into(),
            width: i.width,
            height: i.height,
            channels: i.channels,
            format: i.format.into(),
        }
    }
}

impl From<AbiImage> for Image {
    fn from(i: AbiImage) -> Self {
        Image {
            bytes: i.bytes.into(),
            width: i.width,
            height: i.height,
            channels: i.channels,
            format: i.format.into(),
        }
    }
}

impl From<Tensor> for AbiTensor {
    fn from(t: Tensor) -> Self {
        AbiTensor {
            shape: t.shape.into_iter().map(|d| d as u64).collect(),
            data: match t.data {
                TensorData::F32(v) => AbiTensorData::F32(v.into()),
                TensorData::I64(v) => AbiTensorData::I64(v.into()),
                TensorData::I32(v) => AbiTensorData::I32(v.into()),
            },
        }
    }
}

impl From<AbiTensor> for Tensor {
    fn from(t: AbiTensor) -> Self {
        Tensor {
            shape: t.shape.into_iter().map(|d| d as usize).collect(),
            data: match t.data {
                AbiTensorData::F32(v) => TensorData::F32(v.into()),
                AbiTensorData::I64(v) => TensorData::I64(v.into()),
                AbiTensorData::I32(v) => TensorData::I32(v.into()),
            },
        }
    }
}

impl From<Value> for AbiValue {
    fn from(v: Value) -> Self {
        match v {
            Value::Text(t) => AbiValue::Text(t.into()),
            Value::Image(i) => AbiValue::Image(i.into()),
            Value::Tensor(t) => AbiValue::Tensor(t.into()),
            Value::Json(j) => AbiValue::Json(j.to_string().into()),
        }
    }
}

impl TryFrom<AbiValue> for Value {
    type Error = Error;

    fn try_from(v: AbiValue) -> Result<Self, Error> {
        Ok(match v {
            AbiValue::Text(t) => Value::Text(t.into()),
            AbiValue::Image(i) => Value::Image(i.into()),
            AbiValue::Tensor(t) => Value::Tensor(t.into()),
            AbiValue::Json(j) => Value::Json(
                serde_json::from_str(&j)
                    .map_err(|e| Error::invalid_input(format!("a JSON value is not JSON: {e}")))?,
            ),
        })
    }
}

/// Named values to their ABI form, in name order.
pub fn values_to_abi(values: Values) -> RVec<AbiNamedValue> {
    values
        .into_iter()
        .map(|(name, value)| AbiNamedValue {
            name: name.into(),
            value: value.into(),
        })
        .collect()
}

/// Named values from their ABI form; a repeated name is an error.
pub fn values_from_abi(values: RVec<AbiNamedValue>) -> Result<Values, Error> {
    let mut out = Values::new();
    for AbiNamedValue { name, value } in values {
        let name: String = name.into();
        if out.contains_key(&name) {
            return Err(Error::invalid_input(format!(
                "value `{name}` is given twice"
            )));
        }
        out.insert(name, value.try_into()?);
    }
    Ok(out)
}

fn strings(items: &[String]) -> RVec<RString> {
    items.iter().map(|s| RString::from(s.as_str())).collect()
}

impl From<&PluginInfo> for AbiManifest {
    fn from(info: &PluginInfo) -> Self {
        AbiManifest {
            name: info.name.as_str().into(),
            version: info.version.as_str().into(),
            abi_major: crate::ABI_MAJOR,
            abi_minor: crate::ABI_MINOR,
            types: info
                .types
                .iter()
                .map(|t| AbiTypeDecl {
                    model_type: t.model_type.as_str().into(),
                    capabilities: strings(&["infer".to_owned()]),
                    option_keys: strings(&t.option_keys),
                    description: t.description.as_str().into(),
                })
                .collect(),
        }
    }
}

impl From<&AbiTypeDecl> for TypeDeclaration {
    fn from(t: &AbiTypeDecl) -> Self {
        TypeDeclaration {
            model_type: t.model_type.to_string(),
            description: t.description.to_string(),
            option_keys: t.option_keys.iter().map(|k| k.to_string()).collect(),
        }
    }
}
