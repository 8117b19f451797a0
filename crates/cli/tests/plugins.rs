//! `mm plugins`, `mm infer` and `POST /v1/models/{id}/infer` on a real plugin library.

mod common;
#[path = "../../plugin-host/tests/support/mod.rs"]
mod support;

use assert_cmd::Command;
use common::{json_of, Server};
use std::path::{Path, PathBuf};

/// The echo plugin installed in a private folder, and settings that load it.
struct Setup {
    _dir: tempfile::TempDir,
    library: PathBuf,
    settings: PathBuf,
}

fn setup() -> Setup {
    let (dir, library) = support::install(
        &support::workspace_plugin("mm-plugin-echo"),
        "libmm_plugin_echo.so",
    );
    let settings = dir.path().join("settings.toml");
    std::fs::write(
        &settings,
        format!(
            "plugins.enabled = true\nplugins.dirs = [{:?}]\nmodels.echo.type = \"echo\"\nmodels.echo.prefix = \"> \"\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    Setup {
        _dir: dir,
        library,
        settings,
    }
}

fn mm(settings: &Path) -> Command {
    let mut cmd = Command::cargo_bin("mm").unwrap();
    cmd.env_remove("MM_CONFIG").arg("--config").arg(settings);
    cmd
}

#[test]
fn plugins_list_and_check_report_the_plugin_and_its_types() {
    let s = setup();
    let out = mm(&s.settings)
        .args(["--json", "plugins", "list"])
        .assert()
        .success();
    let value = json_of(&out.get_output().stdout);
    assert_eq!(value["plugins"][0]["name"], "echo");
    assert_eq!(value["plugins"][0]["types"][0]["model_type"], "echo");
    let out = mm(&s.settings)
        .args(["--json", "models"])
        .assert()
        .success();
    let value = json_of(&out.get_output().stdout);
    assert_eq!(
        value["models"]["echo"]["loaders"],
        serde_json::json!(["echo"]),
        "{value}"
    );
    let out = mm(&s.settings)
        .args(["--json", "status"])
        .assert()
        .success();
    assert_eq!(
        json_of(&out.get_output().stdout)["plugins"][0]["name"],
        "echo"
    );

    let out = mm(&s.settings)
        .args(["plugins", "check"])
        .arg(&s.library)
        .assert()
        .success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.contains("is a loadable plugin") && text.contains("type echo"),
        "{text}"
    );
}

/// `mm --json plugins check FILE`, which must fail with the exit code of its error's class
/// (6 for a plugin that does not load); its JSON error.
fn check_fails(settings: &Path, file: &Path) -> serde_json::Value {
    let out = mm(settings)
        .args(["--json", "plugins", "check"])
        .arg(file)
        .assert()
        .failure();
    let value = json_of(&out.get_output().stdout);
    let expected = match value["code"].as_str() {
        Some("PLUGIN_LOAD_ERROR" | "PLUGIN_ABI_MISMATCH") => 6,
        Some("CONFIG_ERROR") => 3,
        _ => 1,
    };
    assert_eq!(out.get_output().status.code(), Some(expected), "{value}");
    value
}

#[test]
fn a_truncated_library_is_reported_and_the_caller_survives() {
    let s = setup();
    let bytes = std::fs::read(&s.library).unwrap();
    let truncated = s.library.with_file_name("libtruncated.so");
    // The headers and the start of the code, without the rest (debug builds put most of the
    // file in debug info, so a fraction of the file could still load).
    std::fs::write(&truncated, &bytes[..20_000]).unwrap();
    support::set_mode(&truncated, 0o644);
    let value = check_fails(&s.settings, &truncated);
    assert_eq!(value["code"], "PLUGIN_LOAD_ERROR");
    assert!(
        value["message"]
            .as_str()
            .unwrap()
            .contains("libtruncated.so"),
        "{value}"
    );

    // Garbage with a plugin name fails the same way, and so does a writable file.
    std::fs::write(&truncated, b"garbage").unwrap();
    support::set_mode(&truncated, 0o666);
    let value = check_fails(&s.settings, &truncated);
    assert!(
        value["message"].as_str().unwrap().contains("writable"),
        "{value}"
    );
}

#[test]
fn mm_infer_runs_a_plugin_model_and_reports_its_errors() {
    let s = setup();
    let value = echo_infer(&s.settings, r#"{"t": "hi", "n": {"k": 1}}"#, 0);
    assert_eq!(value["outputs"]["t"], "> hi");
    assert_eq!(value["outputs"]["n"]["k"], 1);
    let value = echo_infer(&s.settings, r#"{"panic": "yes"}"#, 1);
    assert_eq!(value["code"], "INFERENCE_ERROR");
    let value = echo_infer(&s.settings, "not json", 4);
    assert_eq!(value["code"], "INVALID_INPUT");
}

/// `mm --json infer --model echo --values INPUT`, which must exit with `code`; its JSON.
fn echo_infer(settings: &Path, input: &str, code: i32) -> serde_json::Value {
    let args = ["--json", "infer", "--model", "echo", "--values", input];
    let out = mm(settings).args(args).assert().code(code);
    json_of(&out.get_output().stdout)
}

#[test]
fn http_infer_serves_plugin_models() {
    let s = setup();
    let config = s.settings.display().to_string();
    let server = Server::start(&["--config", &config], &[]);
    let (status, body) = server.post("/v1/models/echo/infer", r#"{"inputs": {"t": "hi"}}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"]["t"], "> hi");

    let (status, body) = server.post("/v1/models/echo/infer", r#"{"inputs": {"panic": "now"}}"#);
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["code"], "INFERENCE_ERROR");
    let (status, _) = server.post("/v1/models/echo/infer", r#"{"inputs": {"t": "again"}}"#);
    assert_eq!(status, 200, "the server answers after a plugin panic");

    let (status, body) = server.post("/v1/models/echo/infer", r#"{"inputs": 3}"#);
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_INPUT")),
        "{body}"
    );
    assert_eq!(body["details"]["field"], "inputs", "{body}");
    let (status, body) = server.post("/v1/models/nope/infer", r#"{"inputs": {}}"#);
    assert_eq!(status, 404, "{body}");
    let (_, status_body) = server.get("/v1/status");
    assert_eq!(status_body["plugins"][0]["name"], "echo");
}

/// `mm check` vets plugins in child processes: a plugin option typo and a pin that names no
/// library are problems, a crashing library is reported, and the checker survives.
#[test]
fn mm_check_catches_plugin_option_typos_dangling_pins_and_crashing_libraries() {
    let s = setup();
    let base = std::fs::read_to_string(&s.settings).unwrap();
    let check = |extra: &str| {
        std::fs::write(&s.settings, format!("{base}{extra}")).unwrap();
        let out = mm(&s.settings).args(["--json", "check"]).assert().failure();
        json_of(&out.get_output().stdout)
    };
    let value = check("models.echo.prefx = \"> \"\n");
    let text = value.to_string();
    assert!(text.contains("prefx"), "{text}");
    let pin = format!(
        "[plugins.sha256]\n\"libmm_plugin_ecco.so\" = \"{}\"\n",
        "0".repeat(64)
    );
    let value = check(&pin);
    let text = value.to_string();
    assert!(
        text.contains("CONFIG_ERROR") && text.contains("libmm_plugin_ecco.so"),
        "{text}"
    );
    std::fs::write(&s.settings, &base).unwrap();
    let whole = std::fs::read(&s.library).unwrap();
    std::fs::write(&s.library, &whole[..whole.len() / 2]).unwrap();
    let out = mm(&s.settings).args(["--json", "check"]).assert().failure();
    let text = json_of(&out.get_output().stdout).to_string();
    assert!(text.contains("PLUGIN_LOAD_ERROR"), "{text}");
    let out = mm(&s.settings).args(["check"]).assert().failure();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(stderr.contains("libmm_plugin_echo.so"), "{stderr}");
}

#[test]
fn text_mode_infer_shows_the_first_values_of_tensors() {
    let s = setup();
    let out = mm(&s.settings)
        .args([
            "infer",
            "--model",
            "echo",
            "--values",
            r#"{"ids": {"shape": [4], "dtype": "i64", "data": [1, 2, 3, 4]},
                "big": {"shape": [10], "dtype": "f32", "data": [0.5, 1, 2, 3, 4, 5, 6, 7, 8, 9]}}"#,
        ])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(stdout.contains("tensor i64 [4] [1, 2, 3, 4]"), "{stdout}");
    assert!(
        stdout.contains("[0.5, 1, 2, 3, 4, 5, 6, 7, … (10 values)]"),
        "{stdout}"
    );
}
