//! The glue [`crate::export_plugin!`] expands to: the root module's functions for a
//! [`Plugin`] type, each call wrapped in `catch_unwind`.

use crate::abi::{AbiError, AbiManifest, AbiModel, AbiModelBox, AbiModel_TO, AbiNamedValue};
use crate::abi::{PluginModule, PluginModuleRef};
use crate::convert::{values_from_abi, values_to_abi};
use crate::sdk::{Error, LoadConfig, Plugin, PluginModel};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RStr, RVec};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The one instance of an exported plugin; implemented by [`crate::export_plugin!`].
#[doc(hidden)]
pub trait Exported: Plugin {
    /// The instance, built with `Default` on first use.
    fn instance() -> &'static Self;
}

thread_local! {
    /// Set while a host call runs under [`guarded`]; the panic's location, once caught.
    static GUARDED: std::cell::RefCell<Option<Option<String>>> = const { std::cell::RefCell::new(None) };
}

/// Makes panics inside host calls quiet (they become errors that carry the location) and
/// leaves other panics of the plugin to the previous hook. The plugin's std is its own copy,
/// so this hook is the plugin's, not the host's.
fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()));
            let guarded = GUARDED.with(|g| match g.borrow_mut().as_mut() {
                Some(slot) => {
                    *slot = location;
                    true
                }
                None => false,
            });
            if !guarded {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into an `INFERENCE_ERROR` (abi_stable would abort the process
/// on a panic that reaches the boundary).
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, Error>) -> Result<T, Error> {
    let outer = GUARDED.with(|g| g.replace(Some(None)));
    let result = catch_unwind(AssertUnwindSafe(f));
    let location = GUARDED.with(|g| g.replace(outer)).flatten();
    result.unwrap_or_else(|payload| {
        let reason = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_owned());
        let at = location.map(|l| format!(" at {l}")).unwrap_or_default();
        Err(Error::inference(format!(
            "the plugin panicked in {what}{at}: {reason}"
        )))
    })
}

struct ModelAdapter(Box<dyn PluginModel>);

impl AbiModel for ModelAdapter {
    fn memory_bytes(&self) -> u64 {
        guarded("memory_bytes", || Ok(self.0.memory_bytes().unwrap_or(0))).unwrap_or(0)
    }

    fn infer(&self, inputs: RVec<AbiNamedValue>) -> RResult<RVec<AbiNamedValue>, AbiError> {
        guarded("infer", || {
            let inputs = values_from_abi(inputs)?;
            self.0.infer(inputs).map(values_to_abi)
        })
        .map_err(AbiError::from)
        .into()
    }
}

extern "C" fn manifest<P: Exported>() -> AbiManifest {
    match guarded("info", || Ok(P::instance().info())) {
        Ok(info) => AbiManifest::from(&info),
        // A manifest with no types: the host reports a plugin that declares nothing.
        Err(e) => AbiManifest::from(&crate::PluginInfo::new(&e.message, "")),
    }
}

extern "C" fn load<P: Exported>(config_json: RStr<'_>) -> RResult<AbiModelBox, AbiError> {
    guarded("load", || {
        let config: LoadConfig = serde_json::from_str(config_json.as_str()).map_err(|e| {
            Error::load(format!(
                "the host sent a load request the plugin cannot read: {e}"
            ))
        })?;
        let model = P::instance().load(&config)?;
        Ok(AbiModel_TO::from_value(ModelAdapter(model), TD_Opaque))
    })
    .map_err(AbiError::from)
    .into()
}

/// The root module of plugin `P`; `panic_abort` is the plugin crate's own
/// `cfg!(panic = "abort")`, evaluated by [`crate::export_plugin!`] where it expands.
#[doc(hidden)]
pub fn root_module<P: Exported>(panic_abort: bool) -> PluginModuleRef {
    install_panic_hook();
    PluginModule {
        manifest: manifest::<P>,
        load: load::<P>,
        panic_abort,
    }
    .leak_into_prefix()
}

/// Boxes a model the way [`crate::export_plugin!`] does, for tests of a plugin's own crate
/// that want to call it through the ABI without loading a library.
pub fn into_abi_model(model: Box<dyn PluginModel>) -> AbiModelBox {
    AbiModel_TO::from_value(ModelAdapter(model), TD_Opaque)
}

/// Exports a [`Plugin`] type as this library's root module. Call it once, at the crate root
/// of a `cdylib`.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        impl $crate::__export::Exported for $plugin {
            fn instance() -> &'static Self {
                static INSTANCE: ::std::sync::OnceLock<$plugin> = ::std::sync::OnceLock::new();
                INSTANCE.get_or_init(<$plugin as ::std::default::Default>::default)
            }
        }

        /// The library header abi_stable looks up (what `#[export_root_module]` generates).
        #[doc(hidden)]
        #[export_name = "_1as_0lib_1header_0root_bmodule_bloader"]
        pub static MODEL_MANAGER_PLUGIN_HEADER: $crate::abi_stable::library::LibHeader = {
            extern "C" fn erased_root_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(|| {
                    $crate::__export::root_module::<$plugin>(cfg!(panic = "abort"))
                })
            }
            // SAFETY: the constructor returns the root module of type `PluginModuleRef`,
            // the type named here, as `#[export_root_module]` does.
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::PluginModuleRef>(
                    erased_root_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_exported_symbol_is_the_one_abi_stable_looks_up() {
        // Keep in step with the `export_name` in `export_plugin!`.
        assert_eq!(
            crate::ROOT_MODULE_SYMBOL,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}
