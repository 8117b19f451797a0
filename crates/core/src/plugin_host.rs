//! What a plugin host implements: the [`PluginHost`] that opens the libraries named in
//! `plugins.*` settings and registers their model types, found through a
//! [`PluginHostRegistration`] (the `model-manager-plugin-host` crate is the one this
//! repository ships). Applications see the result as [`crate::PluginRecord`]s.

pub use crate::plugins::{PluginHost, PluginHostRegistration};
