//! ONNX Runtime backend of model-manager.
//!
//! Planned: type `embedding` from a `model.onnx` folder and a generic tensor type `onnx`,
//! through `ort` with a dynamically loaded runtime. Until it is filled this crate registers
//! **no** loader: configured ONNX models report `UNSUPPORTED_MODEL_TYPE`.

/// Name under which this backend's loaders will register.
pub const BACKEND_NAME: &str = "onnx";
