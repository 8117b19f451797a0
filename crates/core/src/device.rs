//! Device selection: what settings ask for, what is present, and what was chosen and why.

use crate::error::{ErrorCode, ModelError, Result};
use serde::Serialize;
use std::fmt;

/// Global `device_preference`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DevicePreference {
    /// GPU when one is present, else CPU.
    Auto,
    /// Always CPU.
    Cpu,
    /// GPU; when missing, fall back per `device_fallback`.
    Gpu,
}

/// A model's `device` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    /// Follow `device_preference`.
    Auto,
    /// CPU.
    Cpu,
    /// A CUDA device; `None` means the first.
    Cuda(Option<usize>),
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Cuda(None) => f.write_str("cuda"),
            DeviceRequest::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceRequest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A device a model runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// CUDA device with this ordinal.
    Cuda(usize),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The device chosen for a load, with the reason and the memory settings backends honour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceChoice {
    /// Where the model goes.
    pub device: Device,
    /// Why, in words (shown in status).
    pub reason: String,
    /// `gpu_memory_fraction` from settings.
    pub gpu_memory_fraction: f64,
    /// `allow_gpu_growth` from settings.
    pub allow_gpu_growth: bool,
}

/// Reports whether CUDA devices are present. Backends built with CUDA submit one with
/// `inventory::submit!`; with none submitted, the process has no usable GPU.
pub struct GpuProbe {
    /// Who answers (a backend name), for the reason shown in status.
    pub provider: &'static str,
    /// Number of usable CUDA devices.
    pub cuda_device_count: fn() -> usize,
}

inventory::collect!(GpuProbe);

/// Counts CUDA devices across all registered probes (the largest answer wins).
pub fn cuda_device_count() -> (usize, Option<&'static str>) {
    inventory::iter::<GpuProbe>
        .into_iter()
        .map(|p| ((p.cuda_device_count)(), Some(p.provider)))
        .max_by_key(|(n, _)| *n)
        .unwrap_or((0, None))
}

/// Inputs to [`choose_device`].
#[derive(Debug, Clone, Copy)]
pub struct DevicePolicy {
    /// `device_preference`.
    pub preference: DevicePreference,
    /// `device_fallback`.
    pub fallback: bool,
    /// `gpu_memory_fraction`.
    pub gpu_memory_fraction: f64,
    /// `allow_gpu_growth`.
    pub allow_gpu_growth: bool,
}

/// Chooses the device for one model, given how many CUDA devices are present.
pub fn choose_device(
    model_id: &str,
    request: DeviceRequest,
    policy: DevicePolicy,
    cuda_devices: usize,
) -> Result<DeviceChoice> {
    let pick = |device: Device, reason: String| DeviceChoice {
        device,
        reason,
        gpu_memory_fraction: policy.gpu_memory_fraction,
        allow_gpu_growth: policy.allow_gpu_growth,
    };
    let wanted = match (request, policy.preference) {
        (DeviceRequest::Cpu, _) => return Ok(pick(Device::Cpu, "model device = cpu".into())),
        (DeviceRequest::Auto, DevicePreference::Cpu) => {
            return Ok(pick(Device::Cpu, "device_preference = cpu".into()))
        }
        (DeviceRequest::Auto, DevicePreference::Auto) => {
            return Ok(if cuda_devices > 0 {
                pick(Device::Cuda(0), "auto: a CUDA device is present".into())
            } else {
                pick(
                    Device::Cpu,
                    "auto: no CUDA device (or built without the cuda feature)".into(),
                )
            });
        }
        (DeviceRequest::Auto, DevicePreference::Gpu) => (0, "device_preference = gpu"),
        (DeviceRequest::Cuda(n), _) => (n.unwrap_or(0), "model device asks for CUDA"),
    };
    let (ordinal, why) = wanted;
    if ordinal < cuda_devices {
        return Ok(pick(Device::Cuda(ordinal), why.into()));
    }
    let missing = format!(
        "{why}, but cuda:{ordinal} is not available ({cuda_devices} CUDA device(s) found; \
         GPU support needs the `cuda` feature and a CUDA driver)"
    );
    if policy.fallback {
        tracing::warn!(model_id, "{missing}; falling back to CPU");
        Ok(pick(Device::Cpu, format!("{missing}; fell back to CPU")))
    } else {
        Err(ModelError::new(
            ErrorCode::DeviceSetupError,
            format!("{missing}; device_fallback = false forbids running on CPU"),
        )
        .for_model(model_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(preference: DevicePreference, fallback: bool) -> DevicePolicy {
        DevicePolicy {
            preference,
            fallback,
            gpu_memory_fraction: 0.8,
            allow_gpu_growth: true,
        }
    }

    #[test]
    fn auto_takes_cuda_only_when_present() {
        let p = policy(DevicePreference::Auto, true);
        let with = choose_device("m", DeviceRequest::Auto, p, 1).unwrap();
        assert_eq!(with.device, Device::Cuda(0));
        let without = choose_device("m", DeviceRequest::Auto, p, 0).unwrap();
        assert_eq!(without.device, Device::Cpu);
        assert!(without.reason.contains("no CUDA device"));
    }

    #[test]
    fn cpu_wins_over_present_gpu() {
        let p = policy(DevicePreference::Cpu, true);
        assert_eq!(
            choose_device("m", DeviceRequest::Auto, p, 2)
                .unwrap()
                .device,
            Device::Cpu
        );
        let p = policy(DevicePreference::Gpu, true);
        assert_eq!(
            choose_device("m", DeviceRequest::Cpu, p, 2).unwrap().device,
            Device::Cpu
        );
    }

    #[test]
    fn missing_gpu_falls_back_or_fails() {
        let p = policy(DevicePreference::Gpu, true);
        let choice = choose_device("m", DeviceRequest::Auto, p, 0).unwrap();
        assert_eq!(choice.device, Device::Cpu);
        assert!(choice.reason.contains("fell back to CPU"));

        let p = policy(DevicePreference::Auto, false);
        let err = choose_device("m", DeviceRequest::Cuda(Some(1)), p, 1).unwrap_err();
        assert_eq!(err.code, ErrorCode::DeviceSetupError);
        assert!(err.message.contains("cuda:1"));
    }
}
