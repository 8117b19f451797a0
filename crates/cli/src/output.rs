//! How `mm` prints results and errors, and the exit code of each class of error.
//!
//! Results go to stdout (compact JSON with `--json`), everything else (status lines,
//! progress, logs, errors in text mode) to stderr. A stdout whose reader went away (`mm ... |
//! head -1`) stops the command quietly with [`exit::BROKEN_PIPE`], like a program that
//! SIGPIPE ended.

use model_manager::{ErrorCode, ModelError};

/// Exit codes, one per class of error (documented in the README); success is 0.
pub mod exit {
    /// A failure inside the work itself (a forward pass, generation, cache I/O).
    pub const INTERNAL: u8 = 1;
    /// The command line is wrong (clap's usage errors).
    pub const USAGE: u8 = 2;
    /// The settings are wrong: a bad key or value, an unknown model id or type.
    pub const CONFIG: u8 = 3;
    /// The input is wrong: a bad text file, output path or request.
    pub const INPUT: u8 = 4;
    /// A model's files are nowhere to be found.
    pub const NOT_FOUND: u8 = 5;
    /// A model, plugin, runtime or device failed to load.
    pub const LOAD: u8 = 6;
    /// Out of room: capacity, queue, or shutting down.
    pub const CAPACITY: u8 = 7;
    /// Refused: a server wants another API key.
    pub const ACCESS: u8 = 8;
    /// Stdout was closed by its reader (128 + SIGPIPE's 13), e.g. `mm embed ... | head -1`.
    pub const BROKEN_PIPE: u8 = 141;
}

/// The signal that interrupted the command `error` reports, if one did: `mm` re-raises it
/// after its cleanup, so its parent sees it killed by that signal (see `main`). Only a
/// `SHUTTING_DOWN` error says so (the session's own, see `session::until_signal`; a plugin's
/// error can carry neither that code nor a `signal` detail).
pub fn interrupting_signal(error: &ModelError) -> Option<i32> {
    if error.code != ErrorCode::ShuttingDown {
        return None;
    }
    match error.details.get("signal").and_then(|s| s.as_str()) {
        Some("SIGINT") => Some(libc::SIGINT),
        Some("SIGTERM") => Some(libc::SIGTERM),
        _ => None,
    }
}

/// The exit code for `error` (an interrupted command dies of its signal instead; a closed
/// stdout is [`exit::BROKEN_PIPE`]).
pub fn exit_code(error: &ModelError) -> u8 {
    if is_broken_pipe(error) {
        return exit::BROKEN_PIPE;
    }
    match error.code {
        ErrorCode::ConfigError
        | ErrorCode::ModelNotConfigured
        | ErrorCode::InvalidModelType
        | ErrorCode::UnsupportedModelType => exit::CONFIG,
        ErrorCode::InvalidInput => exit::INPUT,
        ErrorCode::ModelNotFound => exit::NOT_FOUND,
        ErrorCode::ModelLoadError
        | ErrorCode::T5ModelLoadError
        | ErrorCode::MissingDependency
        | ErrorCode::DeviceSetupError
        | ErrorCode::PluginLoadError
        | ErrorCode::PluginAbiMismatch => exit::LOAD,
        ErrorCode::CapacityExhausted | ErrorCode::ShuttingDown => exit::CAPACITY,
        ErrorCode::Unauthorized => exit::ACCESS,
        _ => exit::INTERNAL,
    }
}

/// The error of a write to a stdout its reader closed: not reported, exit 141.
pub fn broken_pipe() -> ModelError {
    ModelError::new(ErrorCode::InvalidInput, "stdout was closed by its reader")
        .with("signal", "SIGPIPE")
}

/// Whether `error` is [`broken_pipe`]'s: nothing is printed for it.
pub fn is_broken_pipe(error: &ModelError) -> bool {
    error.details.get("signal").and_then(|s| s.as_str()) == Some("SIGPIPE")
}

/// `e` from writing results to stdout: [`broken_pipe`] when the reader went away.
pub fn stdout_error(e: std::io::Error) -> ModelError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        return broken_pipe();
    }
    ModelError::invalid_input(format!("cannot write to stdout: {e}")).caused_by("IoError", e)
}

/// Writes bytes of results to stdout.
pub fn write_stdout(bytes: &[u8]) -> Result<(), ModelError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// Writes one line of results to stdout; see [`outln!`].
pub fn out(line: std::fmt::Arguments<'_>) -> Result<(), ModelError> {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}").map_err(stdout_error)
}

/// `println!` for results: a closed stdout is an error (see [`broken_pipe`]), not a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::out(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes a line to stderr; a closed stderr is ignored (the line has nowhere to go).
fn err_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Prints `error`: its JSON (`success`, `code`, `message`, `details`) on stdout with `--json`, else one line and a hint on stderr.
pub fn print_error(error: &ModelError, json: bool) {
    if is_broken_pipe(error) {
        return;
    }
    if json {
        let _ = print_json(&error.to_json());
        return;
    }
    err_line(format_args!("error: {} ({})", error.message, error.code));
    let specific = error.details.get("hint").and_then(|h| h.as_str());
    if let Some(hint) = specific.or(hint(error.code)) {
        err_line(format_args!("hint: {hint}"));
    }
}

fn hint(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::ConfigError => "check the settings file named by --config / $MM_CONFIG (default ./settings.toml); the README lists every key",
        ErrorCode::ModelNotConfigured => "add the model under models.<id>.* in the settings file (`mm models` lists what is configured)",
        ErrorCode::UnsupportedModelType => "this build has no loader for that type; `mm status` lists the registered types",
        ErrorCode::ModelNotFound => "`mm models` shows where each model's files are expected",
        ErrorCode::CapacityExhausted => "raise sharing.max_shared_models or memory.max_bytes, or release models sooner",
        _ => return None,
    })
}

/// Prints a JSON value compactly on one line (a result, or one record of a stream).
pub fn print_json(value: &serde_json::Value) -> Result<(), ModelError> {
    out(format_args!("{value}"))
}

/// `n` and `noun`, with an `s` unless `n` is 1: "1 model", "3 models".
pub fn counted(n: impl Into<u64>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--quiet`: status lines are not printed.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// Prints a status line (what was done, where it went) on stderr, unless `--quiet`.
pub fn status(line: std::fmt::Arguments<'_>) {
    if !QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        err_line(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_words() {
        assert_eq!(counted(1u64, "model"), "1 model");
        assert_eq!(counted(0u64, "vector"), "0 vectors");
        assert_eq!(counted(384u64, "vector"), "384 vectors");
    }

    #[test]
    fn a_closed_stdout_is_a_quiet_141() {
        let e = stdout_error(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&e));
        assert_eq!(exit_code(&e), exit::BROKEN_PIPE);
        let other = stdout_error(std::io::Error::from(std::io::ErrorKind::StorageFull));
        assert!(!is_broken_pipe(&other));
        assert_eq!(exit_code(&other), exit::INPUT);
    }

    /// The README's table of exit codes, as (code, error codes of its row).
    fn readme_rows() -> Vec<(u8, Vec<String>)> {
        let readme = include_str!("../../../README.md");
        let table = readme
            .split("**Exit codes**")
            .nth(1)
            .expect("the README's exit code table");
        table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .filter_map(|row| {
                let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                let code = cells.get(1)?.parse().ok()?;
                // The words in backticks.
                let errors = cells
                    .get(3)?
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect();
                Some((code, errors))
            })
            .collect()
    }

    #[test]
    fn every_error_code_exits_as_the_readme_says() {
        let rows = readme_rows();
        for code in ErrorCode::ALL {
            let row = rows
                .iter()
                .find(|(_, errors)| errors.iter().any(|e| e == code.as_str()))
                .unwrap_or_else(|| panic!("{code} is in no row of the README's exit codes"));
            let error = ModelError::new(code, "x");
            assert_eq!(exit_code(&error), row.0, "{code}");
        }
    }

    #[test]
    fn an_interrupted_command_names_its_signal() {
        let error = ModelError::new(ErrorCode::ShuttingDown, "x").with("signal", "SIGTERM");
        assert_eq!(interrupting_signal(&error), Some(libc::SIGTERM));
        assert_eq!(
            interrupting_signal(&ModelError::new(ErrorCode::ShuttingDown, "x")),
            None
        );
        let other = ModelError::new(ErrorCode::InferenceError, "x").with("signal", "SIGTERM");
        assert_eq!(
            interrupting_signal(&other),
            None,
            "only the session's own error"
        );
    }
}
