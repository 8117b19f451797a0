//! The interface model-manager plugin dylibs compile against, and the SDK to write one.
//!
//! A plugin is a `cdylib` that depends on this crate, implements [`Plugin`] (what it
//! provides and how to load a model) and [`PluginModel`] (how a loaded model answers), and
//! calls [`export_plugin!`] once. Everything that crosses the library boundary is an
//! `abi_stable` type from [`abi`], so the host checks the plugin's layout when it loads it
//! and refuses one built against another version of this interface instead of crashing.
//! Every call into the plugin runs under `catch_unwind`: a panicking model becomes an
//! `INFERENCE_ERROR` and the host lives on.
//!
//! ```
//! use model_manager_plugin::{export_plugin, Error, LoadConfig, Plugin, PluginInfo,
//!     PluginModel, TypeDeclaration, Value, Values};
//!
//! #[derive(Default)]
//! struct Hello;
//! struct Greeter;
//!
//! impl Plugin for Hello {
//!     fn info(&self) -> PluginInfo {
//!         PluginInfo::new("hello", env!("CARGO_PKG_VERSION"))
//!             .with_type(TypeDeclaration::new("greeter", "Says hello"))
//!     }
//!     fn load(&self, _config: &LoadConfig) -> Result<Box<dyn PluginModel>, Error> {
//!         Ok(Box::new(Greeter))
//!     }
//! }
//!
//! impl PluginModel for Greeter {
//!     fn infer(&self, inputs: Values) -> Result<Values, Error> {
//!         let name = inputs.get("name").and_then(Value::as_text).unwrap_or("world");
//!         Ok(Values::from([("greeting".into(), Value::Text(format!("hello {name}")))]))
//!     }
//! }
//!
//! export_plugin!(Hello);
//! ```

pub mod abi;
mod convert;
#[doc(hidden)]
pub mod export;
pub mod sdk;

#[doc(hidden)]
pub use export as __export;

pub use abi::PluginModuleRef;
pub use convert::{values_from_abi, values_to_abi};
pub use export::into_abi_model;
pub use sdk::{
    Error, Image, LoadConfig, Plugin, PluginInfo, PluginModel, Tensor, TensorData, TypeDeclaration,
    Value, Values,
};

/// Re-exported so the [`export_plugin!`] expansion needs no direct dependency.
#[doc(hidden)]
pub use abi_stable;

/// Major version of this interface: a host refuses plugins with another major.
pub const ABI_MAJOR: u32 = 1;
/// Minor version of this interface: a host accepts plugins with a minor up to its own.
pub const ABI_MINOR: u32 = 1;

/// The symbol under which abi_stable looks up a library's root module. `export_plugin!`
/// spells it as a literal (an attribute needs one); a test keeps the two equal.
#[doc(hidden)]
pub const ROOT_MODULE_SYMBOL: &str = abi_stable::library::ROOT_MODULE_LOADER_NAME;
