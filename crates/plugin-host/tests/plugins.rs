//! Plugin libraries built with cargo and loaded through the manager.

mod support;

use model_manager_core::{ErrorCode, InferValue, ModelManager, NamedValues, Settings};
use model_manager_plugin_host as _;
use std::path::Path;
use support::{fixture_plugins, install, set_mode, workspace_plugin};

fn echo_settings(library: &Path, extra: &str) -> Settings {
    let text = format!(
        "plugins.enabled = true\nplugins.required = true\nplugins.paths = [{:?}]\n\
         sharing.unload_after_seconds = 1\n\
         models.echo.type = \"echo\"\nmodels.echo.prefix = \"> \"\n{extra}",
        library.display().to_string()
    );
    Settings::from_toml_str(&text, ".").unwrap()
}

fn text_input(name: &str, text: &str) -> NamedValues {
    NamedValues::from([(name.to_owned(), InferValue::Text(text.to_owned()))])
}

async fn init_error(settings: Settings) -> model_manager_core::ModelError {
    ModelManager::new(settings).initialize().await.unwrap_err()
}

#[tokio::test]
async fn a_plugin_type_loads_shares_and_unloads_like_a_built_in_one() {
    let (_dir, library) = install(&workspace_plugin("mm-plugin-echo"), "libmm_plugin_echo.so");
    let manager = ModelManager::new(echo_settings(&library, ""));
    manager.initialize().await.unwrap();

    let plugins = manager.plugins();
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0].name, "echo");
    assert_eq!(plugins[0].types[0].model_type, "echo");
    assert_eq!(plugins[0].sha256.len(), 64);

    let out = manager
        .infer("echo", text_input("greeting", "hello"))
        .await
        .unwrap();
    assert_eq!(out["greeting"], InferValue::Text("> hello".into()));

    let held = manager.get_model("echo").await.unwrap();
    let second = manager.get_model("echo").await.unwrap();
    let status = manager.get_status().await.unwrap();
    assert_eq!(status.plugins[0].name, "echo");
    let model = &status.models["echo"];
    assert_eq!(model.references, 2);
    assert_eq!(model.load_count, 1, "one shared instance");
    assert_eq!(held.model().info().backend, "echo");
    drop((held, second));

    // Idle unload after `unload_after_seconds`.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while manager.get_status().await.unwrap().models["echo"].state != "unloaded" {
        assert!(std::time::Instant::now() < deadline, "echo never unloaded");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    manager.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_panicking_plugin_model_is_an_error_and_the_host_answers_the_next_call() {
    let (_dir, library) = install(&workspace_plugin("mm-plugin-echo"), "libmm_plugin_echo.so");
    let manager = ModelManager::new(echo_settings(&library, ""));
    let err = manager
        .infer("echo", text_input("panic", "now"))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InferenceError);
    assert!(err.message.contains("panicked"), "{}", err.message);
    assert!(
        err.message.contains("plugins/echo/src/lib.rs"),
        "where: {}",
        err.message
    );
    let out = manager
        .infer("echo", text_input("t", "still here"))
        .await
        .unwrap();
    assert_eq!(out["t"], InferValue::Text("> still here".into()));
    let err = manager.infer("echo", NamedValues::new()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidInput);
}

#[tokio::test]
async fn a_plugin_option_of_the_wrong_type_is_a_config_error_from_the_plugin() {
    let (_dir, library) = install(&workspace_plugin("mm-plugin-echo"), "libmm_plugin_echo.so");
    let settings = echo_settings(
        &library,
        "models.bad.type = \"echo\"\nmodels.bad.prefix = 3\n",
    );
    let manager = ModelManager::new(settings);
    let err = manager.get_model("bad").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigError, "{err}");
    let err = init_error(echo_settings(&library, "models.echo.prefx = \"x\"\n")).await;
    assert_eq!(err.code, ErrorCode::ConfigError);
    assert!(
        err.message.contains("prefix"),
        "suggests the declared key: {}",
        err.message
    );
}

#[tokio::test]
async fn garbage_bytes_and_a_plain_cdylib_are_load_errors_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("libgarbage.so");
    std::fs::write(&garbage, b"\x7fELF but not really a library").unwrap();
    set_mode(&garbage, 0o644);
    let err = init_error(echo_settings(&garbage, "")).await;
    assert_eq!(err.code, ErrorCode::PluginLoadError);
    assert!(err.message.contains("libgarbage.so"), "{}", err.message);

    let (_plain_dir, plain) = install(&fixture_plugins().1, "libplain.so");
    let err = init_error(echo_settings(&plain, "")).await;
    assert_eq!(err.code, ErrorCode::PluginLoadError);
    assert!(
        err.message.contains("not a model-manager plugin"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_plugin_built_against_a_changed_interface_is_an_abi_mismatch_with_a_short_summary() {
    let (_dir, library) = install(&fixture_plugins().0, "libmismatched.so");
    let err = init_error(echo_settings(&library, "")).await;
    assert_eq!(err.code, ErrorCode::PluginAbiMismatch, "{err}");
    assert!(err.message.len() < 600, "short: {}", err.message);
    assert!(err.message.contains("0.1.0"), "versions: {}", err.message);
    let first = err.details["first_mismatch"].as_str().unwrap();
    assert!(
        first.contains("AbiImage") && first.contains("width"),
        "{first}"
    );
    assert!(err.message.contains(first), "{}", err.message);
    assert!(err.details["report"].as_str().unwrap().len() > err.message.len());
}

#[tokio::test]
async fn a_changed_function_signature_is_an_abi_mismatch_naming_the_function() {
    let (_dir, library) = install(&support::signature_mismatched_plugin(), "libmismatched.so");
    let err = init_error(echo_settings(&library, "")).await;
    assert_eq!(err.code, ErrorCode::PluginAbiMismatch, "{err}");
    assert!(
        err.message.contains(
            "function `manifest` of PluginModule: expected `fn()->AbiManifest`, found `fn(u32)->AbiManifest`"
        ),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn writable_plugins_and_sha256_mismatches_are_refused_before_opening() {
    let (dir, library) = install(&workspace_plugin("mm-plugin-echo"), "libmm_plugin_echo.so");
    set_mode(&library, 0o664);
    let err = init_error(echo_settings(&library, "")).await;
    assert_eq!(err.code, ErrorCode::PluginLoadError);
    assert!(
        err.message.contains("writable by group or others"),
        "{}",
        err.message
    );
    set_mode(&library, 0o644);
    set_mode(dir.path(), 0o777);
    let err = init_error(echo_settings(&library, "")).await;
    assert!(err.message.contains("its folder"), "{}", err.message);
    set_mode(dir.path(), 0o700);

    let pin = format!(
        "[plugins.sha256]\n\"libmm_plugin_echo.so\" = \"{}\"\n",
        "0".repeat(64)
    );
    let err = init_error(echo_settings(&library, &pin)).await;
    assert_eq!(err.code, ErrorCode::PluginLoadError);
    assert!(err.message.contains("sha256"), "{}", err.message);
}

#[tokio::test]
async fn a_truncated_library_is_a_load_error_not_a_crash() {
    let (dir, library) = install(&workspace_plugin("mm-plugin-echo"), "libmm_plugin_echo.so");
    let whole = std::fs::read(&library).unwrap();
    for keep in [whole.len() / 2, whole.len() - 4096, 100] {
        std::fs::write(&library, &whole[..keep]).unwrap();
        // Were the loader to map it, the process would die of SIGBUS here.
        let err = init_error(echo_settings(&library, "")).await;
        assert_eq!(err.code, ErrorCode::PluginLoadError, "{err}");
        assert!(
            err.message.contains("not a complete shared library"),
            "{}",
            err.message
        );
    }
    std::fs::write(&library, &whole).unwrap();
    ModelManager::new(echo_settings(&library, ""))
        .initialize()
        .await
        .unwrap();
    drop(dir);
}

#[tokio::test]
async fn a_writable_folder_anywhere_above_the_library_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let nested = root.path().join("shared/plugins");
    std::fs::create_dir_all(&nested).unwrap();
    let library = nested.join("libmm_plugin_echo.so");
    std::fs::copy(workspace_plugin("mm-plugin-echo"), &library).unwrap();
    set_mode(&library, 0o644);
    set_mode(&nested, 0o755);
    set_mode(&root.path().join("shared"), 0o777);
    let err = init_error(echo_settings(&library, "")).await;
    assert_eq!(err.code, ErrorCode::PluginLoadError);
    assert!(
        err.message.contains("shared") && err.message.contains("writable by group or others"),
        "{}",
        err.message
    );
    // The sticky bit (as on /tmp) makes a shared folder safe to pass through.
    set_mode(&root.path().join("shared"), 0o1777);
    ModelManager::new(echo_settings(&library, ""))
        .initialize()
        .await
        .unwrap();
}

#[tokio::test]
async fn pins_are_keyed_by_file_name_or_path_and_a_pin_naming_nothing_is_a_config_error() {
    let (_dir, library) = install(&workspace_plugin("mm-plugin-echo"), "libmm_plugin_echo.so");
    let digest = {
        use sha2::Digest;
        let bytes = std::fs::read(&library).unwrap();
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let pin = |key: &str, value: &str| format!("[plugins.sha256]\n{key:?} = \"{value}\"\n");
    let path = library.display().to_string();
    let wrong = "0".repeat(64);
    let err = init_error(echo_settings(&library, &pin(&path, &wrong))).await;
    assert_eq!(
        err.code,
        ErrorCode::PluginLoadError,
        "a full-path pin is checked"
    );
    assert!(err.message.contains("sha256"), "{}", err.message);
    for key in [path.as_str(), "libmm_plugin_echo.so"] {
        ModelManager::new(echo_settings(&library, &pin(key, &digest)))
            .initialize()
            .await
            .unwrap();
    }
    let err = init_error(echo_settings(
        &library,
        &pin("libmm_plugin_ecco.so", &digest),
    ))
    .await;
    assert_eq!(err.code, ErrorCode::ConfigError);
    assert!(
        err.message.contains("libmm_plugin_ecco.so") && err.message.contains("pins no configured"),
        "{}",
        err.message
    );
}

/// Two installed copies of the echo plugin (same types) and settings that load both; the
/// folder guards, the first copy's path, the settings.
fn two_echo_copies() -> ([tempfile::TempDir; 2], std::path::PathBuf, Settings) {
    let echo = workspace_plugin("mm-plugin-echo");
    let (a, first) = install(&echo, "libecho_a.so");
    let (b, second) = install(&echo, "libecho_b.so");
    let text = format!(
        "plugins.enabled = true\nplugins.required = true\nplugins.paths = [{:?}, {:?}]\n",
        first.display().to_string(),
        second.display().to_string()
    );
    ([a, b], first, Settings::from_toml_str(&text, ".").unwrap())
}

#[tokio::test]
async fn a_type_declared_twice_names_both_providers() {
    let (_copies, _, settings) = two_echo_copies();
    let err = init_error(settings).await;
    assert_eq!(err.code, ErrorCode::PluginLoadError);
    assert!(err.message.contains("libecho_a.so"), "{}", err.message);
    assert!(err.message.contains("libecho_b.so"), "{}", err.message);
}

#[tokio::test]
async fn a_failed_initialize_registers_nothing_and_can_be_retried() {
    let (_copies, first, settings) = two_echo_copies();
    let manager = ModelManager::new(settings);
    assert!(manager.initialize().await.is_err());
    assert!(
        !manager.registry().types().contains(&"echo".to_owned()),
        "nothing registered by the failed attempt"
    );

    // A settings error found after the plugins loaded: retrying gives the same error, not a
    // plugin conflict with itself.
    let manager = ModelManager::new(echo_settings(&first, "models.echo.prefx = \"x\"\n"));
    let first_err = manager.initialize().await.unwrap_err();
    let second_err = manager.initialize().await.unwrap_err();
    assert_eq!(first_err.code, ErrorCode::ConfigError);
    assert_eq!(second_err, first_err);
}

/// The file is swapped for another library between the checks and the opening (as an
/// attacker racing the host would): what runs is what was checked, or nothing.
#[test]
fn a_library_swapped_after_its_checks_is_not_the_one_opened() {
    let (dir, library) = install(&workspace_plugin("mm-plugin-echo"), "libswapped.so");
    let other = dir.path().join("other.so");
    std::fs::copy(support::faulty_plugins().0, &other).unwrap();
    set_mode(&other, 0o644);
    let mut swap = || std::fs::rename(&other, &library).unwrap();
    let opened = model_manager_plugin_host::open_plugin_with(
        &library,
        &Default::default(),
        false,
        &mut swap,
    );
    // Opened through the descriptor the checks read: the vetted library runs, not the one
    // now at the path.
    let plugin = opened.unwrap();
    assert_eq!(plugin.record.name, "echo", "the vetted library runs");
    assert_eq!(plugin.types[0].model_type, "echo");
}

/// A plugin whose native dependency sits beside it (RUNPATH `$ORIGIN`) still finds it,
/// though opened through its checked descriptor (whose origin is `/proc/self/fd`): in this
/// process and in a child. A dependency without the SONAME the plugin needs cannot be
/// matched, and the error says why.
#[tokio::test]
async fn a_plugin_finds_its_dependencies_through_origin() {
    let fixture = support::origin_plugin();
    let host = env!("CARGO_BIN_EXE_mm-plugin-host");
    let settings = |library: &Path, isolation: &str| {
        let text = format!(
            "plugins.enabled = true\nplugins.required = true\nplugins.paths = [{:?}]\n\
             plugins.isolation = {isolation:?}\nplugins.host_program = {host:?}\n\
             models.o.type = \"origin\"\n",
            library.display().to_string()
        );
        Settings::from_toml_str(&text, ".").unwrap()
    };
    let beside = |dependency: &Path| {
        let (dir, library) = install(&fixture.plugin, "liborigin.so");
        let copy = dir.path().join("libmmorigin.so");
        std::fs::copy(dependency, &copy).unwrap();
        set_mode(&copy, 0o644);
        (dir, library)
    };
    // First, before the good one is loaded (a loaded SONAME would be matched by name).
    let (_bad_dir, bad) = beside(&fixture.dependency_without_soname);
    let err = init_error(settings(&bad, "in-process")).await;
    assert_eq!(err.code, ErrorCode::PluginLoadError, "{err}");
    assert!(err.message.contains("SONAME"), "{}", err.message);

    let (_dir, library) = beside(&fixture.dependency);
    for isolation in ["process", "in-process"] {
        let manager = ModelManager::new(settings(&library, isolation));
        manager.initialize().await.unwrap();
        let out = manager.infer("o", text_input("x", "")).await.unwrap();
        assert_eq!(out["answer"], InferValue::Text("42".into()), "{isolation}");
    }
}

/// A plugin's error code that speaks for the host (here `UNAUTHORIZED`, which would be a
/// 401) becomes the call's own code; one a plugin may use stands.
#[tokio::test]
async fn a_plugin_cannot_answer_with_the_host_s_codes() {
    let host = env!("CARGO_BIN_EXE_mm-plugin-host");
    let (_dir, library) = install(&support::faulty_plugins().0, "libfaulty.so");
    for isolation in ["in-process", "process"] {
        let text = format!(
            "plugins.enabled = true\nplugins.paths = [{:?}]\nplugins.isolation = {isolation:?}\n\
             plugins.host_program = {host:?}\nmodels.f.type = \"faulty\"\n",
            library.display().to_string()
        );
        let manager = ModelManager::new(Settings::from_toml_str(&text, ".").unwrap());
        for (asked, expected) in [
            ("UNAUTHORIZED", ErrorCode::InferenceError),
            ("SHUTTING_DOWN", ErrorCode::InferenceError),
            ("INVALID_INPUT", ErrorCode::InvalidInput),
        ] {
            let err = manager
                .infer("f", text_input("error_code", asked))
                .await
                .unwrap_err();
            assert_eq!(err.code, expected, "{isolation} {asked}: {err}");
            if expected == ErrorCode::InferenceError {
                assert_eq!(err.details["plugin_code"], asked, "{isolation}");
            }
        }
    }
}
