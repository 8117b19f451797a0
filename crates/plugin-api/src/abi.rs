//! The ABI-stable types that cross the library boundary. Plugin authors use the plain types
//! of [`crate::sdk`]; the host and [`crate::export_plugin!`] convert.

// `#[sabi_trait]` expands to impls inside a const block, which this lint flags.
#![allow(non_local_definitions)]

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RBox, RResult, RStr, RString, RVec};
use abi_stable::{declare_root_module_statics, package_version_strings, sabi_trait, StableAbi};

/// An error crossing the boundary: a model-manager error code and a message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct AbiError {
    /// E.g. `INVALID_INPUT`, `MODEL_LOAD_ERROR`, `INFERENCE_ERROR`.
    pub code: RString,
    /// For people.
    pub message: RString,
}

/// An image: encoded bytes (`format` png, jpeg…) or raw pixels (`format` raw, with
/// width, height and channels).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct AbiImage {
    /// Encoded file bytes or raw row-major pixels.
    pub bytes: RVec<u8>,
    /// Pixels per row; 0 when the decoder finds out.
    pub width: u32,
    /// Rows; 0 when the decoder finds out.
    pub height: u32,
    /// Channels per pixel; 0 when the decoder finds out.
    pub channels: u32,
    /// `png`, `jpeg`, `raw`, or empty to guess from the bytes.
    pub format: RString,
}

/// Tensor elements by type.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub enum AbiTensorData {
    /// 32-bit floats.
    F32(RVec<f32>),
    /// 64-bit integers.
    I64(RVec<i64>),
    /// 32-bit integers.
    I32(RVec<i32>),
}

/// A row-major tensor.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct AbiTensor {
    /// Dimensions.
    pub shape: RVec<u64>,
    /// Elements; their count is the product of `shape`.
    pub data: AbiTensorData,
}

/// One input or output value.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub enum AbiValue {
    /// Text.
    Text(RString),
    /// An image.
    Image(AbiImage),
    /// A tensor.
    Tensor(AbiTensor),
    /// Free-form JSON, as text.
    Json(RString),
}

/// A value with its name.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct AbiNamedValue {
    /// Input or output name.
    pub name: RString,
    /// The value.
    pub value: AbiValue,
}

/// One model type a plugin provides.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct AbiTypeDecl {
    /// Registry key, the `type` in settings.
    pub model_type: RString,
    /// What its models can do; `infer` for now.
    pub capabilities: RVec<RString>,
    /// Keys it reads under `models.<id>.`.
    pub option_keys: RVec<RString>,
    /// One line for `mm plugins list`.
    pub description: RString,
}

/// What a plugin is and provides.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct AbiManifest {
    /// Plugin name; the backend name of its loaders.
    pub name: RString,
    /// The plugin's own version.
    pub version: RString,
    /// [`crate::ABI_MAJOR`] it was built with.
    pub abi_major: u32,
    /// [`crate::ABI_MINOR`] it was built with.
    pub abi_minor: u32,
    /// The model types it declares.
    pub types: RVec<AbiTypeDecl>,
}

/// A loaded plugin model, as the host sees it.
#[sabi_trait]
pub trait AbiModel: Send + Sync {
    /// Memory the model holds in bytes, or 0 when unknown.
    fn memory_bytes(&self) -> u64;

    /// Runs the model on named values.
    #[sabi(last_prefix_field)]
    fn infer(&self, inputs: RVec<AbiNamedValue>) -> RResult<RVec<AbiNamedValue>, AbiError>;
}

/// An owned loaded plugin model.
pub type AbiModelBox = AbiModel_TO<'static, RBox<()>>;

/// The root module every plugin exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// What the plugin provides.
    pub manifest: extern "C" fn() -> AbiManifest,
    /// Loads a model of a declared type from a [`crate::LoadConfig`] in JSON.
    #[sabi(last_prefix_field)]
    pub load: extern "C" fn(RStr<'_>) -> RResult<AbiModelBox, AbiError>,
    /// Whether the library was built with `panic = "abort"` (interface 1.1; absent from
    /// older plugins): its panics cannot be caught, so a host runs it only in a child process.
    #[sabi(missing_field(option))]
    pub panic_abort: bool,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "model_manager_plugin";
    const NAME: &'static str = "model_manager_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
