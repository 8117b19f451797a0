//! The interface that third-party plugin dylibs of model-manager will compile against.
//!
//! Not implemented yet: the host loads no plugins, and there is nothing here to build a
//! plugin with. Until then, add a model type statically with a crate that implements
//! `model_manager_core::ModelLoader` and registers it with `inventory::submit!`.
