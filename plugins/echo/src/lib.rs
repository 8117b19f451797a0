//! The smallest model-manager plugin: type `echo` returns its inputs, optionally with a
//! prefix added to texts. An input named `panic` makes the model panic on purpose, to show
//! (and test) that a panicking plugin becomes an `INFERENCE_ERROR` and the host lives on.

use model_manager_plugin::{
    export_plugin, Error, LoadConfig, Plugin, PluginInfo, PluginModel, TypeDeclaration, Value,
    Values,
};

/// The plugin: one type, `echo`.
#[derive(Default)]
pub struct EchoPlugin;

impl Plugin for EchoPlugin {
    fn info(&self) -> PluginInfo {
        PluginInfo::new("echo", env!("CARGO_PKG_VERSION")).with_type(
            TypeDeclaration::new("echo", "Returns its inputs; `prefix` is prepended to texts")
                .with_options(&["prefix"]),
        )
    }

    fn load(&self, config: &LoadConfig) -> Result<Box<dyn PluginModel>, Error> {
        let prefix = match config.option("prefix") {
            None => String::new(),
            Some(serde_json::Value::String(p)) => p.clone(),
            Some(other) => {
                return Err(Error::config(format!(
                    "`models.{}.prefix` must be a string, found {other}",
                    config.model_id
                )))
            }
        };
        Ok(Box::new(Echo { prefix }))
    }
}

struct Echo {
    prefix: String,
}

impl PluginModel for Echo {
    fn infer(&self, inputs: Values) -> Result<Values, Error> {
        if let Some(reason) = inputs.get("panic") {
            panic!("asked to panic: {reason:?}");
        }
        if inputs.is_empty() {
            return Err(Error::invalid_input("echo needs at least one input"));
        }
        Ok(inputs
            .into_iter()
            .map(|(name, value)| match value {
                Value::Text(t) => (name, Value::Text(format!("{}{t}", self.prefix))),
                other => (name, other),
            })
            .collect())
    }
}

export_plugin!(EchoPlugin);
