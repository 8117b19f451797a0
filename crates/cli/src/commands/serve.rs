//! `mm serve`: the HTTP API of `model_manager::server` on one address until SIGINT or
//! SIGTERM, then in-flight requests finish and the models are unloaded.

use crate::args::ServeArgs;
use crate::session::{with_manager, OnSignal};
use model_manager::server::{self, ServerConfig};
use model_manager::{ModelError, ModelManager, Settings};

/// `mm serve`.
pub async fn serve(settings: Settings, args: &ServeArgs) -> Result<(), ModelError> {
    let config = config_of(&settings, args)?;
    let listener = server::bind(&config).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| ModelError::invalid_input(e.to_string()))?;
    with_manager(settings, OnSignal::LeftToCommand, |manager| async move {
        manager.initialize().await?;
        eprintln!("mm: listening on http://{addr}");
        print_banner(&manager, &config);
        server::serve(listener, manager, config, server::shutdown_signal()).await;
        Ok(())
    })
    .await?;
    eprintln!("mm: stopped");
    Ok(())
}

/// `server.*` with the command line's overrides.
fn config_of(settings: &Settings, args: &ServeArgs) -> Result<ServerConfig, ModelError> {
    let mut limits = settings.server.clone();
    limits.max_body_bytes = args.max_body_bytes.unwrap_or(limits.max_body_bytes);
    limits.max_inputs = args.max_inputs.unwrap_or(limits.max_inputs);
    limits.max_concurrent = args.max_concurrent.unwrap_or(limits.max_concurrent);
    let key_file = args
        .api_key_file
        .as_deref()
        .or(limits.api_key_file.as_deref());
    Ok(ServerConfig {
        addr: listen_addr(&args.addr)?,
        api_key: server::api_key(args.api_key.as_deref(), key_file)?,
        limits,
    })
}

/// `HOST:PORT` with a name (`localhost:8080`) or an address.
fn listen_addr(text: &str) -> Result<std::net::SocketAddr, ModelError> {
    use std::net::ToSocketAddrs;
    let invalid = |why: String| {
        ModelError::invalid_input(format!("--addr {text}: {why}")).with(
            "hint",
            "give HOST:PORT, e.g. 127.0.0.1:8080, localhost:8080 or 0.0.0.0:80",
        )
    };
    let mut found = text.to_socket_addrs().map_err(|e| invalid(e.to_string()))?;
    found
        .next()
        .ok_or_else(|| invalid("resolves to no address".into()))
}

/// What is served, from where, with which limits: on stderr at start.
fn print_banner(manager: &ModelManager, config: &ServerConfig) {
    let settings = manager.settings();
    let source = settings
        .source
        .as_ref()
        .map_or_else(|| "built-in defaults".into(), |p| p.display().to_string());
    eprintln!(
        "mm: {} {}, settings {source}",
        env!("CARGO_PKG_NAME"),
        env!("CARGO_PKG_VERSION")
    );
    for spec in settings.models.values() {
        eprintln!("mm:   model {:<16} {}", spec.id, spec.model_type);
    }
    eprintln!(
        "mm: api key {}, at most {} requests at once; requests are logged at info (-v or MM_LOG=mm::request=info)",
        if config.api_key.is_some() { "required" } else { "off" },
        config.limits.max_concurrent
    );
}
