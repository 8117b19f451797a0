//! From the core's device choice to a candle device.

use candle_core::{DType, Device};
use model_manager_core::{DeviceChoice, ErrorCode, ModelError, ModelSpec, Result};

/// The candle device for `choice`; a CUDA device that cannot be opened is `DEVICE_SETUP_ERROR`.
pub fn candle_device(choice: &DeviceChoice) -> Result<Device> {
    match choice.device {
        model_manager_core::Device::Cpu => Ok(Device::Cpu),
        model_manager_core::Device::Cuda(n) => Device::new_cuda(n).map_err(|e| {
            ModelError::new(
                ErrorCode::DeviceSetupError,
                format!("cannot open cuda:{n}: {e}"),
            )
            .caused_by("CandleError", e)
        }),
    }
}

/// Number of CUDA devices candle can open.
#[cfg(feature = "cuda")]
pub fn cuda_device_count() -> usize {
    if !candle_core::utils::cuda_is_available() {
        return 0;
    }
    (0..16).take_while(|&n| Device::new_cuda(n).is_ok()).count()
}

/// The `dtype` option: f32 (default), f16 or bf16.
pub fn dtype_option(spec: &ModelSpec) -> Result<DType> {
    match spec.option_str("dtype")? {
        None | Some("f32") | Some("float32") => Ok(DType::F32),
        Some("f16") | Some("float16") => Ok(DType::F16),
        Some("bf16") | Some("bfloat16") => Ok(DType::BF16),
        Some(other) => {
            let key = format!("models.{}.dtype", spec.id);
            Err(ModelError::config(
                &key,
                format!("settings key `{key}` expects one of f32, f16, bf16, found \"{other}\""),
            ))
        }
    }
}

/// The core's name for a candle device, for status.
pub fn core_device(device: &Device) -> model_manager_core::Device {
    match device.location() {
        candle_core::DeviceLocation::Cuda { gpu_id } => model_manager_core::Device::Cuda(gpu_id),
        _ => model_manager_core::Device::Cpu,
    }
}
