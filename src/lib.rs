//! model-manager: owns the AI models of an application.
//!
//! The README below is this crate's front page; its Rust examples compile as doc tests.
//!
//! This facade re-exports [`model_manager_core`] and links the backends chosen with cargo
//! features (`candle`, `onnx`, `plugins`, `redis`, on by default), so their statically registered loaders are
//! kept by the linker and found by [`Registry::with_static_loaders`]. Feature `server` adds
//! the HTTP API (`model_manager::server::router`), `hub` downloads from the Hugging Face hub, `cuda`
//! forwards CUDA support to the backends.

#![doc = include_str!("../README.md")]

pub use model_manager_core::*;

#[cfg(feature = "redis")]
pub use model_manager_cache_redis as cache_redis;
#[cfg(feature = "candle")]
pub use model_manager_candle as candle;
#[cfg(feature = "onnx")]
pub use model_manager_onnx as onnx;
#[cfg(feature = "plugins")]
pub use model_manager_plugin_host as plugin_host;
#[cfg(feature = "server")]
pub use model_manager_server as server;
