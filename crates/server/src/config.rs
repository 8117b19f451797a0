//! Where the server listens, who may call it, and its limits.

use model_manager_core::settings::ServerSettings;
use model_manager_core::{ModelError, Settings};
use std::net::SocketAddr;
use std::path::Path;

/// Address, access and limits of the server.
#[derive(Clone)]
pub struct ServerConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// Required `Authorization: Bearer` token, if any. An empty one refuses every request
    /// but `/health`.
    pub api_key: Option<String>,
    /// `server.*` from settings, with command-line overrides.
    pub limits: ServerSettings,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addr", &self.addr)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("limits", &self.limits)
            .finish()
    }
}

impl ServerConfig {
    /// `settings.server` at `addr`, with the key of `server.api_key_file` if one is set.
    /// Environment variables are not read here: `mm serve`'s `MM_API_KEY` and
    /// `MM_API_KEY_FILE` are its command line's; an application passes its own key through
    /// [`api_key`].
    pub fn from_settings(settings: &Settings, addr: SocketAddr) -> Result<Self, ModelError> {
        Ok(Self {
            addr,
            api_key: api_key(None, settings.server.api_key_file.as_deref())?,
            limits: settings.server.clone(),
        })
    }
}

/// The API key: `given`, else the content of `file` without its final line break, else none. An unreadable file or an
/// empty key is a `CONFIG_ERROR`, never a silently open server.
pub fn api_key(given: Option<&str>, file: Option<&Path>) -> Result<Option<String>, ModelError> {
    let key = match (given, file) {
        (Some(key), _) => key.to_owned(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| {
                ModelError::config(
                    "server.api_key_file",
                    format!("cannot read the API key file {}: {e}", path.display()),
                )
            })?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if key.trim().is_empty() {
        return Err(ModelError::config(
            "server.api_key_file",
            "the API key is empty (--api-key, MM_API_KEY or the key file): set a key, or unset it to serve without one",
        ));
    }
    Ok(Some(key))
}
