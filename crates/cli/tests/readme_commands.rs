//! Every command of the README and of `docs/` runs, as written, somewhere a failure is seen:
//!
//! - `mm` lines: each parses; those that need no server, download or input file run on the
//!   repository's settings (the quick start's main job among them) and print what the
//!   comment under them shows, when there is one;
//! - `curl` lines: sent to a live `mm serve` on loopback (the documented `localhost:8080`
//!   replaced by its address), each answer checked against the comment under it;
//! - the quick start's two lines: `.ci/run` runs them, character for character;
//! - blocks marked `sh ci` (release builds): `.ci/run` runs them as scripts;
//! - `docs/plugin-guide.md`: run as one script by `plugin_guide.rs`.
//!
//! A command line none of these runs fails [`every_documented_command_is_run_somewhere`], so
//! an example added to the README cannot go unchecked.

mod common;

use serde_json::Value;
use std::process::{Command, Stdio};

/// One command of a document's shell block.
#[derive(Debug, Clone)]
struct DocCommand {
    /// The document, relative to the repository.
    file: String,
    /// Its first line in the document.
    line: usize,
    /// The block's info string (`sh`, `sh ci`).
    tag: String,
    /// The command, continuation lines joined, a trailing `# comment` removed.
    text: String,
    /// The comment lines right under it: what it prints.
    output: Vec<String>,
}

/// Info strings of shell blocks.
fn is_shell(tag: &str) -> bool {
    matches!(
        tag.split_whitespace().next(),
        Some("sh" | "bash" | "shell" | "console")
    )
}

/// The commands of `file`'s shell blocks (heredoc bodies are part of their command).
fn commands_in(file: &str) -> Vec<DocCommand> {
    let text = std::fs::read_to_string(common::repo().join(file)).unwrap();
    let mut commands: Vec<DocCommand> = Vec::new();
    let mut block: Option<String> = None;
    let mut heredoc: Option<String> = None;
    let mut pending: Option<DocCommand> = None;
    let mut after_command = false;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if let Some(tag) = line.strip_prefix("```") {
            block = match block {
                None => Some(tag.trim().to_owned()),
                Some(_) => None,
            };
            after_command = false;
            continue;
        }
        let Some(tag) = block.as_ref().filter(|t| is_shell(t)) else {
            continue;
        };
        if let Some(end) = &heredoc {
            if line.trim() == end {
                heredoc = None;
            }
            continue;
        }
        if let Some(command) = pending.as_mut() {
            command.text.push(' ');
            command
                .text
                .push_str(line.trim().trim_end_matches('\\').trim_end());
            if !line.ends_with('\\') {
                commands.push(pending.take().unwrap());
                after_command = true;
            }
            continue;
        }
        let trimmed = line.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            if after_command {
                let last = commands.last_mut().unwrap();
                last.output.push(comment.trim().to_owned());
            }
            continue;
        }
        if trimmed.is_empty() {
            after_command = false;
            continue;
        }
        heredoc = heredoc_end(trimmed);
        let command = DocCommand {
            file: file.to_owned(),
            line: i + 1,
            tag: tag.clone(),
            text: without_comment(trimmed.trim_end_matches('\\').trim_end()).to_owned(),
            output: Vec::new(),
        };
        if line.ends_with('\\') {
            pending = Some(command);
        } else {
            commands.push(command);
            after_command = true;
        }
    }
    commands
}

/// The end marker of a heredoc the line starts (`<<'TOML'`, `<<EOF`).
fn heredoc_end(line: &str) -> Option<String> {
    let rest = line.split("<<").nth(1)?;
    let marker = rest.trim_start_matches('-').split_whitespace().next()?;
    Some(marker.trim_matches(['\'', '"']).to_owned())
}

/// `line` without a trailing `  # comment` (two spaces, as the README writes them).
fn without_comment(line: &str) -> &str {
    line.split("  #").next().unwrap_or(line).trim_end()
}

/// The README and every document under docs/.
fn documents() -> Vec<String> {
    let mut files = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(common::repo().join("docs"))
        .unwrap()
        .flatten()
        .map(|e| format!("docs/{}", e.file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

fn all_commands() -> Vec<DocCommand> {
    documents().iter().flat_map(|f| commands_in(f)).collect()
}

/// The lines of `.ci/run`.
fn ci_lines() -> Vec<String> {
    std::fs::read_to_string(common::repo().join(".ci/run"))
        .unwrap()
        .lines()
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Who runs a documented command.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Runner {
    /// `.ci/run`, as one of its lines.
    CiLine,
    /// `.ci/run`, as part of a `sh ci` block.
    CiBlock,
    /// `plugin_guide.rs`, as part of the guide.
    PluginGuide,
    /// [`the_readme_mm_commands_parse_and_the_self_contained_ones_run`].
    Mm,
    /// [`the_readme_curl_commands_answer_as_documented`].
    Curl,
}

fn runner(command: &DocCommand, ci: &[String]) -> Option<Runner> {
    if command.file == "docs/plugin-guide.md" {
        return Some(Runner::PluginGuide);
    }
    if command.tag.split_whitespace().any(|w| w == "ci") {
        return Some(Runner::CiBlock);
    }
    if ci.contains(&command.text) {
        return Some(Runner::CiLine);
    }
    if command.text.starts_with("mm ") {
        return Some(Runner::Mm);
    }
    if command.text.starts_with("curl ") {
        return Some(Runner::Curl);
    }
    None
}

#[test]
fn every_documented_command_is_run_somewhere() {
    let ci = ci_lines();
    let commands = all_commands();
    let orphans: Vec<String> = commands
        .iter()
        .filter(|c| runner(c, &ci).is_none())
        .map(|c| format!("{}:{}: {}", c.file, c.line, c.text))
        .collect();
    assert!(
        orphans.is_empty(),
        "no test runs these documented commands; run each where a failure is seen (see this \
         file's header):\n{}",
        orphans.join("\n")
    );
    let count = |r: Runner| {
        commands
            .iter()
            .filter(|c| runner(c, &ci) == Some(r))
            .count()
    };
    assert!(count(Runner::Mm) >= 12, "{commands:#?}");
    assert!(count(Runner::Curl) >= 5, "{commands:#?}");
    assert!(count(Runner::CiBlock) >= 2, "{commands:#?}");
    assert!(count(Runner::PluginGuide) >= 10, "{commands:#?}");
    // `.ci/run` extracts the `sh ci` blocks by this exact fence.
    let script = std::fs::read_to_string(common::repo().join(".ci/run")).unwrap();
    assert!(script.contains("/^```sh ci$/"), "{script}");
}

#[test]
fn ci_runs_the_quick_start_as_written() {
    let quick: Vec<DocCommand> = commands_in("README.md")
        .into_iter()
        .filter(|c| c.text.starts_with("scripts/fetch-models.sh") && c.tag == "sh")
        .collect();
    let ci = ci_lines();
    assert_eq!(quick.len(), 2, "the quick start's two lines: {quick:#?}");
    for command in &quick {
        assert!(
            ci.contains(&command.text),
            ".ci/run does not run the README's `{}`",
            command.text
        );
    }
    assert!(quick[0]
        .text
        .contains("cargo run --release --bin mm -- search"));
    assert!(quick[1].text.ends_with("cargo test --workspace"));
}

/// The arguments of an `mm` command line (or of `cargo run ... --bin mm -- ARGS`).
fn mm_args(text: &str) -> Option<&str> {
    match text.split_once("cargo run --release --bin mm -- ") {
        Some((_, args)) => Some(args),
        None => text.strip_prefix("mm "),
    }
}

/// Splits a command into words: double and single quotes group; a redirection ends it.
fn shell_words(line: &str) -> Vec<String> {
    let line = line.split(" > ").next().unwrap_or(line);
    let (mut words, mut word, mut quote) = (Vec::new(), String::new(), None);
    for c in line.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ' ') if !word.is_empty() => words.push(std::mem::take(&mut word)),
            (None, ' ') => {}
            (_, c) => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Runs on the repository's settings alone: no server, download, input or output file.
fn self_contained(words: &[String]) -> bool {
    let local = [
        "models",
        "check",
        "similarity",
        "search",
        "status",
        "completions",
        "embed",
        "generate",
        "rerank",
        "classify",
        "quantize-check",
    ];
    let first = words.first().map(String::as_str).unwrap_or_default();
    let touches_files = words
        .iter()
        .any(|w| ["-i", "-o", "--input", "--output", "--config", "-c"].contains(&w.as_str()));
    local.contains(&first) && !touches_files
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every `mm` command of the README parses (with a settings file that does not exist, each
/// stops at the settings, exit 3, or runs; never at the command line, exit 2); those that
/// need no server, network or input file run on the repository's settings, succeed, and
/// print what the comment under them shows.
#[test]
fn the_readme_mm_commands_parse_and_the_self_contained_ones_run() {
    let commands: Vec<(DocCommand, String)> = commands_in("README.md")
        .into_iter()
        .filter_map(|c| mm_args(&c.text).map(|a| (c.clone(), a.to_owned())))
        .collect();
    assert!(commands.len() >= 15, "{commands:#?}");
    let dir = tempfile::tempdir().unwrap();
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let settings = section_settings("README.md");
    let (mut ran, mut main_job) = (0, false);
    for (command, args) in &commands {
        let words = shell_words(args);
        let out = Command::new(assert_cmd::cargo::cargo_bin("mm"))
            .current_dir(dir.path())
            .env("MM_CONFIG", dir.path().join("absent.toml"))
            .env("HF_HUB_OFFLINE", "1")
            .env("MM_URL", "http://127.0.0.1:1")
            .args(&words)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let at = format!("README.md:{}: `{}`", command.line, command.text);
        assert_ne!(out.status.code(), Some(2), "{at}: {}", text(&out.stderr));
        if !self_contained(&words) {
            continue;
        }
        let mut mm = Command::new(assert_cmd::cargo::cargo_bin("mm"));
        match settings_with(extra_settings(&readme, &settings, command.line), dir.path()) {
            Some(path) => mm.env("MM_CONFIG", path),
            None => mm.env_remove("MM_CONFIG"),
        };
        let out = mm
            .current_dir(common::repo())
            .env("HF_HUB_OFFLINE", "1")
            .args(&words)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{at}: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        if !command.output.is_empty() {
            // A comment's own indentation is not kept: lines compare without theirs.
            let printed: Vec<&str> = stdout.trim_end().lines().map(str::trim).collect();
            assert_eq!(printed, command.output, "{at}");
        }
        if command.text.starts_with("scripts/fetch-models.sh") {
            // The main job prints its ranking: the refund policy first.
            let first = stdout.lines().find(|l| l.trim_start().starts_with("1. "));
            assert!(
                first.is_some_and(|l| l.to_lowercase().contains("refund")),
                "{at}: {stdout}"
            );
            main_job = true;
        }
        ran += 1;
    }
    assert!(ran >= 6 && main_job, "{commands:#?}");
}

/// The documented answer's JSON: `…` stands for more elements like the one before it.
fn documented_json(comment: &str) -> Value {
    let quoted = comment.replace('…', "\"…\"");
    serde_json::from_str(&quoted).unwrap_or_else(|e| panic!("{e}: {comment}"))
}

/// Whether `actual` has `documented`'s shape: the same keys, the same strings, booleans and
/// nulls, a number for a number, and arrays element by element (a trailing `…` matches any
/// number of further elements like the last one shown).
fn same_shape(actual: &Value, documented: &Value, path: &str) -> Result<(), String> {
    let differ = || Err(format!("at {path}: documented {documented}, got {actual}"));
    match (actual, documented) {
        (Value::Number(_), Value::Number(_)) => Ok(()),
        (Value::Object(a), Value::Object(d)) => {
            let (ak, dk): (Vec<&String>, Vec<&String>) = (a.keys().collect(), d.keys().collect());
            if ak != dk {
                return Err(format!("at {path}: documented keys {dk:?}, got {ak:?}"));
            }
            d.iter()
                .try_for_each(|(k, v)| same_shape(&a[k], v, &format!("{path}.{k}")))
        }
        (Value::Array(a), Value::Array(d)) => {
            let open = d.last() == Some(&Value::String("…".into()));
            let shown = &d[..d.len() - usize::from(open)];
            if a.len() < shown.len() || (!open && a.len() != shown.len()) {
                return differ();
            }
            a.iter().enumerate().try_for_each(|(i, item)| {
                let like = shown.get(i).or(shown.last()).unwrap_or(&Value::Null);
                same_shape(item, like, &format!("{path}[{i}]"))
            })
        }
        (a, d) if a == d => Ok(()),
        _ => differ(),
    }
}

#[test]
fn documented_shapes_are_compared_strictly() {
    let doc = documented_json(r#"{"a":[1.5,…],"b":"x","c":null}"#);
    assert!(same_shape(
        &serde_json::json!({"a": [1, 2, 3], "b": "x", "c": null}),
        &doc,
        ""
    )
    .is_ok());
    for wrong in [
        serde_json::json!({"a": [], "b": "x", "c": null}),
        serde_json::json!({"a": [1, "2"], "b": "x", "c": null}),
        serde_json::json!({"a": [1], "b": "y", "c": null}),
        serde_json::json!({"a": [1], "b": "x"}),
        serde_json::json!({"a": [1], "b": "x", "c": null, "d": 1}),
    ] {
        assert!(same_shape(&wrong, &doc, "").is_err(), "{wrong}");
    }
    let closed = documented_json("[1]");
    assert!(same_shape(&serde_json::json!([1, 2]), &closed, "").is_err());
}

/// The settings a README section adds to the default ones (its ```` ```toml settings ````
/// block), by the section's heading line; each command of that section runs on them.
fn section_settings(file: &str) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(common::repo().join(file)).unwrap();
    let (mut sections, mut block): (Vec<(usize, String)>, Option<String>) = (Vec::new(), None);
    let mut heading = 0;
    for (i, line) in text.lines().enumerate() {
        match (&mut block, line.trim_end()) {
            (None, "```toml settings") => block = Some(String::new()),
            (Some(body), "```") => {
                sections.push((heading, std::mem::take(body)));
                block = None;
            }
            (Some(body), line) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, line) if line.starts_with("## ") => heading = i + 1,
            _ => {}
        }
    }
    sections
}

/// The section heading above `line` of the README (`## ` headings).
fn section_of(text: &str, line: usize) -> usize {
    text.lines()
        .enumerate()
        .take(line)
        .filter(|(_, l)| l.starts_with("## "))
        .map(|(i, _)| i + 1)
        .last()
        .unwrap_or(0)
}

/// The repository's settings plus `extra` in a file under `dir`, paths resolved in the
/// repository; `None` without extra settings.
fn settings_with(extra: &str, dir: &std::path::Path) -> Option<std::path::PathBuf> {
    if extra.is_empty() {
        return None;
    }
    let base = std::fs::read_to_string(common::repo().join("settings.toml")).unwrap();
    let repo = common::repo().canonicalize().unwrap();
    let text = format!("{base}\n{extra}").replace("\"./", &format!("\"{}/", repo.display()));
    let path = dir.join(format!("settings-{}.toml", extra.len()));
    std::fs::write(&path, text).unwrap();
    Some(path)
}

/// The extra settings of the README section holding `line`.
fn extra_settings<'a>(readme: &str, settings: &'a [(usize, String)], line: usize) -> &'a str {
    let section = section_of(readme, line);
    settings
        .iter()
        .find(|(heading, _)| *heading == section)
        .map_or("", |(_, toml)| toml.as_str())
}

/// `mm serve` on the repository's settings plus `extra`.
fn server_with(extra: &str, dir: &std::path::Path) -> common::Server {
    match settings_with(extra, dir) {
        None => common::Server::start(&[], &[]),
        Some(path) => common::Server::start(&[], &[("MM_CONFIG", path.to_str().unwrap())]),
    }
}

/// The README's `curl` commands, in order, against a live `mm serve` on the default settings
/// and what their section's ```` ```toml settings ```` block adds.
#[test]
fn the_readme_curl_commands_answer_as_documented() {
    let commands: Vec<DocCommand> = commands_in("README.md")
        .into_iter()
        .filter(|c| c.text.starts_with("curl "))
        .collect();
    assert!(commands.len() >= 5, "{commands:#?}");
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let settings = section_settings("README.md");
    assert!(!settings.is_empty(), "the scoring section's settings");
    let dir = tempfile::tempdir().unwrap();
    let mut servers: Vec<(String, common::Server)> = Vec::new();
    for command in &commands {
        let at = format!("README.md:{}: `{}`", command.line, command.text);
        let extra = extra_settings(&readme, &settings, command.line);
        if !servers.iter().any(|(e, _)| e == extra) {
            servers.push((extra.to_owned(), server_with(extra, dir.path())));
        }
        let server = &servers.iter().find(|(e, _)| e == extra).unwrap().1;
        assert!(
            command.text.contains("localhost:8080"),
            "{at}: examples use the default address"
        );
        assert_eq!(
            command.output.len(),
            1,
            "{at}: one comment line shows the answer"
        );
        let line = command.text.replace("localhost:8080", &server.addr);
        let out = Command::new("bash")
            .args(["-c", &line])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{at}: {}", text(&out.stderr));
        let answer: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{at}: not JSON ({e}): {}", text(&out.stdout)));
        let documented = documented_json(&command.output[0]);
        if let Err(e) = same_shape(&answer, &documented, "") {
            panic!("{at}: {e}");
        }
    }
}

/// `scripts/fetch-models.sh` fetches models and nothing else; what the tests start is
/// installed by `scripts/test-services.sh`, which the README's test line runs.
#[test]
fn fetching_models_installs_no_services() {
    let fetch = std::fs::read_to_string(common::repo().join("scripts/fetch-models.sh")).unwrap();
    for word in ["apt-get", "sudo", "redis-server --", "DESIGN.md"] {
        assert!(!fetch.contains(word), "fetch-models.sh mentions {word}");
    }
    let services =
        std::fs::read_to_string(common::repo().join("scripts/test-services.sh")).unwrap();
    assert!(services.contains("redis-server") && services.contains("MM_TEST_SERVICES"));
    let test_line = commands_in("README.md")
        .into_iter()
        .find(|c| c.text.ends_with("cargo test --workspace"))
        .unwrap();
    assert!(
        test_line.text.contains("scripts/test-services.sh"),
        "{test_line:?}"
    );
}

/// The README's axum mounting example names the axum `crates/server` is built on (another
/// major version has another `Router` type).
#[test]
fn the_mounting_example_names_the_server_s_axum() {
    let manifest =
        std::fs::read_to_string(common::repo().join("crates/server/Cargo.toml")).unwrap();
    let axum = manifest
        .lines()
        .find_map(|l| l.strip_prefix("axum = "))
        .expect("crates/server depends on axum");
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("`axum = {axum}`")),
        "the README's mounting example should say `axum = {axum}`"
    );
}
