//! `mm` as people expect a CLI to behave: strict input formats, output checked first and
//! removed on Ctrl-C, compact JSON and stderr status lines, exit codes per class, `mm init`,
//! `mm check` reporting every problem, `mm ps`, the server's banner and request log, shell
//! completions and the progress bar on a terminal (the README's commands:
//! `readme_commands.rs`).
mod common;

use assert_cmd::Command;
use common::{json_of, Server};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// `mm` in the repository (default settings), never reaching the internet.
fn mm() -> Command {
    let mut cmd = Command::cargo_bin("mm").unwrap();
    cmd.current_dir(common::repo())
        .env_remove("MM_CONFIG")
        .env_remove("MM_LOG")
        .env_remove("RUST_LOG")
        .env("HF_HUB_OFFLINE", "1")
        .timeout(Duration::from_secs(300));
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends SIGINT to `child`, as Ctrl-C in its terminal would.
fn interrupt(child: &std::process::Child) {
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status();
    assert!(sent.unwrap().success());
}

/// `count` distinct lines (the bundled corpus's, numbered), none of them cached.
fn distinct_texts(count: usize) -> String {
    let corpus = std::fs::read_to_string(common::repo().join("examples/corpus.txt")).unwrap();
    let lines: Vec<&str> = corpus.lines().collect();
    (0..count)
        .map(|i| format!("{} {i}\n", lines[i % lines.len()]))
        .collect()
}

fn write(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn jsonl_lines_without_the_field_and_mixed_inputs_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "a.jsonl", "{\"content\": \"hello\"}\n");
    let out = mm()
        .args(["--json", "embed", "-i"])
        .arg(&input)
        .assert()
        .code(4);
    let error = json_of(&out.get_output().stdout);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("line 1") && message.contains("`text`"),
        "{error}"
    );
    assert!(
        error["details"]["hint"]
            .as_str()
            .unwrap()
            .contains("--field"),
        "{error}"
    );
    // The field named: it works.
    mm().args(["embed", "--field", "content", "-i"])
        .arg(&input)
        .assert()
        .success();

    let mixed = write(dir.path(), "m.txt", "plain text\n{\"text\": \"json\"}\n");
    let out = mm()
        .args(["--json", "embed", "-i"])
        .arg(&mixed)
        .assert()
        .code(4);
    let error = json_of(&out.get_output().stdout);
    assert!(
        error["message"].as_str().unwrap().contains("line 2"),
        "{error}"
    );
    // Declared plain text: the JSON line is a text.
    mm().args(["embed", "--format", "text", "-i"])
        .arg(&mixed)
        .assert()
        .success();
}

#[test]
fn blank_lines_are_kept_so_vectors_line_up_with_input_lines() {
    let dir = tempfile::tempdir().unwrap();
    let input = write(dir.path(), "t.txt", "first\n\nthird\n");
    let output = dir.path().join("v.jsonl");
    mm().args(["embed", "given", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .assert()
        .success();
    let records: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let lines: Vec<Value> = records.iter().map(|r| r["line"].clone()).collect();
    assert_eq!(lines, [Value::Null, 1.into(), 2.into(), 3.into()]);
    let indexes: Vec<u64> = records
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
}

#[test]
fn long_texts_are_counted_when_cut_and_refused_with_no_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let long = "word ".repeat(200_000);
    let input = write(dir.path(), "t.txt", &format!("short\n{long}\n"));
    let out = mm()
        .args(["embed", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(dir.path().join("v.npy"))
        .assert()
        .success();
    let stderr = text(&out.get_output().stderr);
    assert!(
        stderr.contains("1 text reached the model's token limit") && stderr.contains("line 2"),
        "{stderr}"
    );
    let note = stderr.lines().find(|l| l.contains("token limit")).unwrap();
    assert!(!note.contains("  "), "one space between words: {note:?}");
    assert!(
        stderr.contains("wrote 2 vectors of 384 dimensions"),
        "{stderr}"
    );
    let out = mm()
        .args(["--json", "embed", "--no-truncate", "-i"])
        .arg(&input)
        .assert()
        .code(4);
    let error = json_of(&out.get_output().stdout);
    assert_eq!(error["details"]["line"], 2, "{error}");
}

#[test]
fn an_unwritable_output_fails_before_any_work() {
    let started = Instant::now();
    let out = mm()
        .args(["--json", "embed", "x", "-o", "/nonexistent-folder/v.npy"])
        .assert()
        .code(4);
    let error = json_of(&out.get_output().stdout);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent-folder/v.npy"),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it loaded the model first"
    );
}

#[test]
fn ctrl_c_after_the_first_chunk_removes_the_partial_file_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = std::fs::read_to_string(common::repo().join("examples/corpus.txt")).unwrap();
    let lines: Vec<&str> = corpus.lines().filter(|l| !l.trim().is_empty()).collect();
    let many: String = (0..8_000)
        .map(|i| format!("{} #{i}\n", lines[i % lines.len()]))
        .collect();
    let input = write(dir.path(), "many.txt", &many);
    let output = dir.path().join("v.jsonl");
    let partial = dir.path().join("v.jsonl.partial");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("mm"))
        .current_dir(common::repo())
        .env_remove("MM_CONFIG")
        .env("HF_HUB_OFFLINE", "1")
        .args(["embed", "-i"])
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    while std::fs::metadata(&partial).map_or(0, |m| m.len()) == 0 {
        assert!(Instant::now() < deadline, "no chunk written");
        std::thread::sleep(Duration::from_millis(50));
    }
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    // After its cleanup, mm dies of the signal, so a shell loop around it stops too.
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGINT),
        "{:?}: {}",
        out.status,
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("interrupted by SIGINT") && stderr.contains("v.jsonl.partial"),
        "{stderr}"
    );
    assert!(
        !partial.exists() && !output.exists(),
        "{:?}",
        std::fs::read_dir(dir.path()).unwrap().collect::<Vec<_>>()
    );
}

#[test]
fn ctrl_c_in_any_model_command_still_shuts_the_manager_down_and_saves_the_cache() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.mmcache");
    let config = write(
        dir.path(),
        "settings.toml",
        &format!(
            "embedding_cache.persist_to_disk = true\nembedding_cache.path = \"{}\"\n\
             models.embedding.type = \"embedding\"\nmodels.embedding.local_path = \"{}\"\n",
            cache.display(),
            common::repo().join("models/all-MiniLM-L6-v2").display()
        ),
    );
    let corpus: String = (0..20_000)
        .map(|i| format!("document number {i} about guitars and oceans\n"))
        .collect();
    let corpus = write(dir.path(), "corpus.txt", &corpus);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("mm"))
        .env("MM_CONFIG", &config)
        .env("MM_LOG", "model_manager_core=debug")
        .env("HF_HUB_OFFLINE", "1")
        .args(["search", "--corpus"])
        .arg(&corpus)
        .arg("a question about guitars")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The query is embedded (and cached) first; the second reference is the corpus's.
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (mut taken, mut seen) = (0, String::new());
    while taken < 2 {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
        taken += usize::from(line.contains("model reference taken"));
        seen.push_str(&line);
    }
    interrupt(&child);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGINT),
        "{status:?}: {rest}"
    );
    assert!(rest.contains("SIGINT: shutting down"), "{rest}");
    // The next run restores what the interrupted one saved at its shutdown.
    let out = mm()
        .env("MM_CONFIG", &config)
        .args(["--json", "embed", "a question about guitars"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        json_of(&out.stdout)["cache_hits"],
        1,
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn output_dash_streams_jsonl_to_stdout() {
    let out = mm()
        .args(["embed", "-i", "-", "-o", "-"])
        .write_stdin("one\ntwo\n")
        .assert()
        .success();
    let stdout = text(&out.get_output().stdout);
    let records: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["line"], 2);
    assert_eq!(records[1]["embedding"].as_array().unwrap().len(), 384);
    assert!(text(&out.get_output().stderr).contains("wrote 2 vectors"));
    let out = mm()
        .args(["embed", "-i", "-", "-o", "-"])
        .write_stdin("one\n")
        .assert()
        .success();
    assert!(
        text(&out.get_output().stderr).contains("wrote 1 vector of"),
        "{}",
        text(&out.get_output().stderr)
    );
}

/// Without `-o`, the README promises the vectors on stdout: one JSON array per text, in
/// input order, equal to what `--json` gives.
#[test]
fn embed_without_output_prints_the_vectors() {
    let out = mm()
        .args(["embed", "first text", "second text"])
        .assert()
        .success();
    let stdout = text(&out.get_output().stdout);
    let rows: Vec<Vec<f64>> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows.iter().all(|r| r.len() == 384));
    let out = mm()
        .args(["--json", "embed", "first text", "second text"])
        .assert()
        .success();
    let json = json_of(&out.get_output().stdout);
    let second: Vec<f64> = serde_json::from_value(json["embeddings"][1].clone()).unwrap();
    assert_eq!(rows[1], second);
}

/// `mm` writing into a pipe whose reader went away, as `| head -1` or `| true` leave it.
fn with_closed_stdout(args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("mm"))
        .current_dir(common::repo())
        .env_remove("MM_CONFIG")
        .env("HF_HUB_OFFLINE", "1")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = input.write_all(&stdin);
    });
    // Read one line (or nothing), then close the pipe.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    if !args.contains(&"completions") {
        std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
        assert!(first.starts_with('{'), "{first}");
    }
    drop(stdout);
    feeder.join().unwrap();
    child.wait_with_output().unwrap()
}

/// A closed stdout ends the command quietly with 141 (as SIGPIPE would): no panic (101), no
/// `INVALID_INPUT` (4), nothing on stderr.
#[test]
fn a_closed_stdout_is_a_quiet_exit_141() {
    let out = with_closed_stdout(&["completions", "bash"], b"");
    assert_eq!(out.status.code(), Some(141), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");

    let many = distinct_texts(1030);
    let out = with_closed_stdout(&["-q", "embed", "-i", "-", "-o", "-"], many.as_bytes());
    assert_eq!(out.status.code(), Some(141), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn json_is_compact_status_goes_to_stderr_and_usage_errors_are_json() {
    let out = mm().args(["--json", "models"]).assert().success();
    let stdout = text(&out.get_output().stdout);
    assert_eq!(stdout.trim_end().lines().count(), 1, "{stdout}");
    let models = json_of(stdout.as_bytes());
    assert!(
        models["models"]["embedding"]["loaders"].is_array(),
        "{models}"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = mm()
        .args(["embed", "x", "-o"])
        .arg(dir.path().join("v.npy"))
        .assert()
        .success();
    assert!(
        out.get_output().stdout.is_empty(),
        "results in the file, status on stderr"
    );
    assert!(text(&out.get_output().stderr).contains("wrote 1 vector of"));

    let out = mm()
        .args(["--json", "embed", "--frobnicate"])
        .assert()
        .code(2);
    let error = json_of(&out.get_output().stdout);
    assert_eq!(error["code"], "INVALID_INPUT");
    assert!(
        error["details"]["usage"]
            .as_str()
            .unwrap()
            .contains("Usage"),
        "{error}"
    );
    // Without --json, clap's own usage text on stderr.
    let out = mm().args(["embed", "--frobnicate"]).assert().code(2);
    assert!(text(&out.get_output().stderr).contains("Usage"));
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let out = mm().args(["-vv", "embed", "colourless"]).assert().success();
    let stderr = text(&out.get_output().stderr);
    assert!(
        stderr.contains("INFO") || stderr.contains("DEBUG"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    let out = mm()
        .args(["-q", "embed", "quiet", "-o", "-"])
        .assert()
        .success();
    assert!(
        out.get_output().stderr.is_empty(),
        "{}",
        text(&out.get_output().stderr)
    );
}

#[test]
fn outside_a_project_commands_say_which_settings_they_tried_and_init_writes_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut outside = mm();
    outside.current_dir(dir.path());
    let out = outside.arg("models").assert().code(3);
    let stderr = text(&out.get_output().stderr);
    assert!(
        stderr.contains("settings.toml") && stderr.contains("mm init"),
        "{stderr}"
    );

    let mut init = mm();
    init.current_dir(dir.path()).arg("init").assert().success();
    let written = dir.path().join("settings.toml");
    assert!(written.is_file());
    // Online, the embedding model would be downloaded by name: a warning. The text2text
    // model has no hub name (it comes from scripts/fetch-models.sh): its missing folder is
    // the one problem, and the hint says how to fill it.
    let mut check = mm();
    check.env_remove("HF_HUB_OFFLINE");
    let out = check
        .current_dir(dir.path())
        .args(["--json", "check"])
        .assert()
        .code(3);
    let report = json_of(&out.get_output().stdout);
    let problems = report["details"]["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{report}");
    assert!(
        problems[0]["message"]
            .as_str()
            .unwrap()
            .contains("models.t5_summarizer.local_path"),
        "{report}"
    );
    assert!(
        report["details"]["warnings"]
            .as_array()
            .is_some_and(|w| !w.is_empty()),
        "{report}"
    );
    let mut again = mm();
    again.current_dir(dir.path()).arg("init").assert().code(4);
    let mut forced = mm();
    forced
        .current_dir(dir.path())
        .args(["init", "--force"])
        .assert()
        .success();
}

#[test]
fn check_reports_every_problem_with_lines_types_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let two_typos = write(
        dir.path(),
        "a.toml",
        "sharing.max_shared_modles = 2\nembedding_cache.ttl_secnds = 1\n",
    );
    let out = mm()
        .args(["--json", "check", "-c"])
        .arg(&two_typos)
        .assert()
        .code(3);
    let report = json_of(&out.get_output().stdout);
    assert_eq!(
        report["details"]["problems"].as_array().unwrap().len(),
        2,
        "{report}"
    );

    let syntax = write(dir.path(), "b.toml", "enabled = true\nsharing = = 1\n");
    let out = mm()
        .args(["--json", "check", "-c"])
        .arg(&syntax)
        .assert()
        .code(3);
    let report = json_of(&out.get_output().stdout);
    let first = &report["details"]["problems"][0];
    assert!(
        first["message"].as_str().unwrap().contains("line 2"),
        "{report}"
    );

    let models = write(
        dir.path(),
        "c.toml",
        "models.typo.type = \"embeding\"\n\
         models.gone.type = \"embedding\"\nmodels.gone.local_path = \"/nonexistent/model\"\n\
         models.later.type = \"embedding\"\nmodels.later.name = \"org/model\"\nmodels.later.local_path = \"/nonexistent/x\"\n",
    );
    let out = mm()
        .args(["--json", "check", "-c"])
        .arg(&models)
        .env_remove("HF_HUB_OFFLINE")
        .assert()
        .code(3);
    let report = json_of(&out.get_output().stdout);
    let problems = report["details"]["problems"].as_array().unwrap();
    let messages: Vec<&str> = problems
        .iter()
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert_eq!(problems.len(), 2, "{report}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("embeding") && m.contains("did you mean `embedding`")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("models.gone.local_path")),
        "{messages:?}"
    );
    let warnings = report["details"]["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("models.later")),
        "{report}"
    );
}

/// Five mistakes of different kinds in one file: one run reports every one, each at the
/// line and column of its key, in file order.
#[test]
fn check_reports_every_problem_of_a_file_in_one_run_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let five = write(
        dir.path(),
        "five.toml",
        "sharing.max_shared_modles = 2\n\
         embedding_cache.ttl_seconds = \"an hour\"\n\
         \n\
         [models.embedding]\n\
         type = \"embedding\"\n\
         local_path = \"./nowhere\"\n\
         pooling_mode = \"mean\"\n\
         \n\
         [models.t5]\n\
         type = \"text2txt\"\n",
    );
    let out = mm()
        .args(["--json", "check", "-c"])
        .arg(&five)
        .assert()
        .code(3);
    let report = json_of(&out.get_output().stdout);
    let problems = report["details"]["problems"].as_array().unwrap();
    let found: Vec<(u64, u64, &str)> = problems
        .iter()
        .map(|p| {
            (
                p["details"]["line"].as_u64().unwrap_or(0),
                p["details"]["column"].as_u64().unwrap_or(0),
                p["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (1, 9, "CONFIG_ERROR"),
            (2, 17, "CONFIG_ERROR"),
            (6, 1, "MODEL_NOT_FOUND"),
            (7, 1, "CONFIG_ERROR"),
            (10, 1, "UNSUPPORTED_MODEL_TYPE"),
        ],
        "{report}"
    );
    let out = mm().args(["check", "-c"]).arg(&five).assert().code(3);
    let stderr = text(&out.get_output().stderr);
    assert!(
        stderr.contains("five.toml:7:1: settings key `models.embedding.pooling_mode` is unknown; did you mean `models.embedding.pooling`?"),
        "{stderr}"
    );
    assert!(stderr.contains(": 5 problems"), "{stderr}");

    let one = write(
        dir.path(),
        "one.toml",
        "[models.e]\ntype = \"embedding\"\nname = \"org/model\"\n",
    );
    let out = mm()
        .env_remove("HF_HUB_OFFLINE")
        .args(["check", "-c"])
        .arg(&one)
        .assert()
        .success();
    assert!(
        text(&out.get_output().stdout).ends_with("valid (1 model)\n"),
        "{}",
        text(&out.get_output().stdout)
    );
}

#[test]
fn serve_takes_host_names_and_names_a_busy_port() {
    let server = Server::start(&[], &[("MM_LOG", "mm::request=info")]);
    server.wait_log("model embedding");
    let (status, _) = server.post(
        "/v1/embeddings",
        r#"{"input": "logged", "model": "embedding"}"#,
    );
    assert_eq!(status, 200);
    let line = server.wait_log("POST /v1/embeddings");
    assert!(
        line.contains("model=embedding texts=1 tokens=") && line.contains("status=200"),
        "{line}"
    );

    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    let out = mm()
        .args(["--json", "serve", "--addr", &format!("localhost:{port}")])
        .assert()
        .code(4);
    let error = json_of(&out.get_output().stdout);
    assert!(
        error["details"]["hint"]
            .as_str()
            .unwrap()
            .contains("another process"),
        "{error}"
    );
}

#[test]
fn ps_shows_the_models_of_a_running_server() {
    let server = Server::start(&[], &[]);
    assert_eq!(
        server
            .post(
                "/v1/embeddings",
                r#"{"input": "load it", "model": "embedding"}"#
            )
            .0,
        200
    );
    let out = mm().args(["ps", "--url", &server.url()]).assert().success();
    let table = text(&out.get_output().stdout);
    let columns = |id: &str| -> Vec<String> {
        let row = table
            .lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default();
        row.split_whitespace().map(str::to_owned).collect()
    };
    // ID, TYPE, STATE: the type as /v1/status names it.
    assert_eq!(
        columns("embedding")[..3],
        ["embedding", "embedding", "loaded"],
        "{table}"
    );
    assert_eq!(columns("t5_summarizer")[1], "text2text", "{table}");
    let out = mm()
        .args(["--json", "ps", "--url", &server.url()])
        .assert()
        .success();
    let status = json_of(&out.get_output().stdout);
    assert_eq!(status["models"]["embedding"]["state"], "loaded", "{status}");
    let out = mm()
        .args(["--json", "ps", "--url", "http://127.0.0.1:1"])
        .assert()
        .code(3);
    let error = json_of(&out.get_output().stdout);
    assert!(
        error["details"]["hint"]
            .as_str()
            .unwrap()
            .contains("mm serve"),
        "{error}"
    );
}

#[test]
fn completions_are_printed_for_a_shell() {
    let out = mm().args(["completions", "bash"]).assert().success();
    let script = text(&out.get_output().stdout);
    assert!(
        script.contains("_mm") && script.contains("embed"),
        "{}",
        &script[..200.min(script.len())]
    );
}

#[test]
fn the_progress_bar_draws_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let many = distinct_texts(1500);
    let input = write(dir.path(), "many.txt", &many);
    let command = format!(
        "{} embed -i {} -o {}",
        assert_cmd::cargo::cargo_bin("mm").display(),
        input.display(),
        dir.path().join("v.npy").display()
    );
    // `script` runs the command on a pseudo-terminal and copies what it drew.
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(common::repo())
        .env_remove("MM_CONFIG")
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let drawn = text(&out.stdout);
    assert!(out.status.success(), "{drawn}");
    assert!(drawn.contains(" texts"), "no progress drawn: {drawn:?}");
    assert!(dir.path().join("v.npy").is_file());
}

#[test]
fn ps_without_the_server_s_key_is_unauthorized() {
    let server = Server::start(&["--api-key", "s3cret"], &[]);
    let out = mm()
        .env_remove("MM_API_KEY")
        .args(["--json", "ps", "--url", &server.url()])
        .assert()
        .code(8);
    let error = json_of(&out.get_output().stdout);
    assert_eq!(error["code"], "UNAUTHORIZED", "{error}");
    mm().args(["ps", "--url", &server.url(), "--api-key", "s3cret"])
        .assert()
        .success();
}
