//! Builds plugin libraries with cargo for the tests, as a third party would build them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs `cargo build` on `manifest` for `package` and returns the cdylib it produced.
fn cargo_build_cdylib(manifest: &Path, package: &str, target_dir: Option<&Path>) -> PathBuf {
    cargo_build_cdylib_with(manifest, package, target_dir, &[])
}

/// [`cargo_build_cdylib`] with more cargo arguments (e.g. a profile).
fn cargo_build_cdylib_with(
    manifest: &Path,
    package: &str,
    target_dir: Option<&Path>,
    extra: &[&str],
) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--message-format=json-render-diagnostics",
        "-p",
        package,
    ]);
    cmd.args(extra);
    cmd.arg("--manifest-path").arg(manifest);
    if let Some(dir) = target_dir {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wanted = package.replace('-', "_");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == wanted.as_str())
        .flat_map(|m| m["filenames"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .find(|f| {
            f.extension()
                .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
        })
        .unwrap_or_else(|| panic!("cargo built no shared library for {package}"))
}

/// Builds a plugin of this workspace (once per test binary).
pub fn workspace_plugin(package: &'static str) -> PathBuf {
    static BUILT: OnceLock<Mutex<std::collections::HashMap<&'static str, PathBuf>>> =
        OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    built
        .entry(package)
        .or_insert_with(|| cargo_build_cdylib(&workspace_root().join("Cargo.toml"), package, None))
        .clone()
}

/// Copies `library` into a fresh private folder (mode 0700, file 0644), as an operator
/// installs a plugin; returns the folder guard and the copy's path.
pub fn install(library: &Path, name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join(name);
    std::fs::copy(library, &dest).unwrap();
    set_mode(&dest, 0o644);
    set_mode(dir.path(), 0o700);
    (dir, dest)
}

/// The pid of a plugin child of process `parent` (serving `library`, when given), found in
/// `/proc` by its parent and the environment variable the host starts it with.
pub fn plugin_child_of(parent: u32, library: Option<&Path>) -> Option<u32> {
    plugin_children_of(parent, library).into_iter().next()
}

/// The pids of every plugin child of process `parent` (serving `library`, when given),
/// running or killed and not reaped yet.
pub fn plugin_children_of(parent: u32, library: Option<&Path>) -> Vec<u32> {
    let parent = parent.to_string();
    let wanted = library.map(|l| format!("MM_PLUGIN_CHILD_LIBRARY={}", l.display()));
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit(") ").next().and_then(|r| r.split(' ').nth(1));
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let serves = |var: &[u8]| match &wanted {
                Some(wanted) => var == wanted.as_bytes(),
                None => var.starts_with(b"MM_PLUGIN_CHILD_LIBRARY="),
            };
            ppid == Some(parent.as_str()) && environ.split(|b| *b == 0).any(serves)
        })
        .collect()
}

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Fixtures that need their own workspace: the echo plugin built against a copy of the
/// interface with one field changed, and a plain cdylib with no root module. Built under
/// `target/plugin-fixtures` (kept between runs). Returns (mismatched, plain).
pub fn fixture_plugins() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(build_fixtures).clone()
}

/// The echo plugin built against a copy of the interface whose `manifest` function takes an
/// argument: a changed function signature rather than a changed field.
pub fn signature_mismatched_plugin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let fixtures = root.join("target/plugin-fixtures-signature");
            let interface = fixtures.join("interface");
            copy_interface(&root, &interface);
            edit(
                &interface.join("src/abi.rs"),
                "pub manifest: extern \"C\" fn() -> AbiManifest,",
                "pub manifest: extern \"C\" fn(u32) -> AbiManifest,",
            );
            edit(
                &interface.join("src/export.rs"),
                "extern \"C\" fn manifest<P: Exported>() -> AbiManifest {",
                "extern \"C\" fn manifest<P: Exported>(_: u32) -> AbiManifest {",
            );
            write_echo_against_interface(&root, &fixtures, "mismatched");
            write(
                &fixtures.join("Cargo.toml"),
                "[workspace]\nmembers = [\"interface\", \"mismatched\"]\nresolver = \"2\"\n\n[profile.dev]\nopt-level = 1\n",
            );
            copy_lock(&root, &fixtures);
            cargo_build_cdylib(
                &fixtures.join("Cargo.toml"),
                "mismatched",
                Some(&fixtures.join("target")),
            )
        })
        .clone()
}

/// The workspace's Cargo.lock in a fixture workspace: the same dependency versions.
fn copy_lock(root: &Path, fixtures: &Path) {
    write(
        &fixtures.join("Cargo.lock"),
        &std::fs::read_to_string(root.join("Cargo.lock")).unwrap(),
    );
}

/// Replaces `from` (which must be there) by `to` in `file`.
fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} lacks {from}", file.display());
    write(file, &text.replace(from, to));
}

/// The interface crate's manifest for a copy outside the workspace: versions instead of
/// workspace inheritance, the values crate by absolute path.
fn standalone_manifest(root: &Path, manifest: &str) -> String {
    manifest
        .replace("{ workspace = true }", "\"1\"")
        .replace(
            "serde = \"1\"",
            "serde = { version = \"1\", features = [\"derive\"] }",
        )
        .replace(
            "path = \"../values\"",
            &format!(
                "path = {:?}",
                root.join("crates/values").display().to_string()
            ),
        )
}

/// A copy of the interface crate at `to` that builds outside the workspace.
fn copy_interface(root: &Path, to: &Path) {
    copy_dir(&root.join("crates/plugin-api"), to);
    let manifest = std::fs::read_to_string(to.join("Cargo.toml")).unwrap();
    write(
        &to.join("Cargo.toml"),
        &standalone_manifest(root, &manifest),
    );
}

/// The echo plugin's source as package `name` in `fixtures`, against `../interface`.
fn write_echo_against_interface(root: &Path, fixtures: &Path, name: &str) {
    let echo_src = root.join("plugins/echo/src/lib.rs");
    write(
        &fixtures.join(format!("{name}/Cargo.toml")),
        &format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\npath = {:?}\n\n[dependencies]\nmodel-manager-plugin = {{ path = \"../interface\" }}\nserde_json = \"1\"\n",
            echo_src.display().to_string()
        ),
    );
}

fn build_fixtures() -> (PathBuf, PathBuf) {
    let root = workspace_root();
    let fixtures = root.join("target/plugin-fixtures");
    let interface = fixtures.join("interface");
    copy_dir(&root.join("crates/plugin-api"), &interface);
    // The changed interface: two fields of a boundary type swapped, as if the host had
    // moved on without the plugin being rebuilt (the source still compiles).
    let abi = interface.join("src/abi.rs");
    let text = std::fs::read_to_string(&abi).unwrap();
    let (width, height) = ("    pub width: u32,\n", "    pub height: u32,\n");
    assert!(text.contains(width) && text.contains(height));
    let swapped = text
        .replace(width, "@WIDTH@")
        .replace(height, width)
        .replace("@WIDTH@", height);
    std::fs::write(&abi, swapped).unwrap();
    let manifest = std::fs::read_to_string(interface.join("Cargo.toml")).unwrap();
    std::fs::write(
        interface.join("Cargo.toml"),
        standalone_manifest(&root, &manifest),
    )
    .unwrap();
    let echo_src = root.join("plugins/echo/src/lib.rs");
    write(
        &fixtures.join("mismatched/Cargo.toml"),
        &format!(
            "[package]\nname = \"mismatched\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\npath = {:?}\n\n[dependencies]\nmodel-manager-plugin = {{ path = \"../interface\" }}\nserde_json = \"1\"\n",
            echo_src.display().to_string()
        ),
    );
    write(
        &fixtures.join("plain/Cargo.toml"),
        "[package]\nname = \"plain\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n",
    );
    write(
        &fixtures.join("plain/src/lib.rs"),
        "//! A cdylib that is not a plugin.\n\n/// Answers 42.\n#[no_mangle]\npub extern \"C\" fn answer() -> i32 {\n    42\n}\n",
    );
    write(
        &fixtures.join("Cargo.toml"),
        "[workspace]\nmembers = [\"interface\", \"mismatched\", \"plain\"]\nresolver = \"2\"\n\n[profile.dev]\nopt-level = 1\n",
    );
    // Same dependency versions as the host, so only the changed field differs.
    copy_lock(&root, &fixtures);
    let manifest = fixtures.join("Cargo.toml");
    let target = fixtures.join("target");
    let mismatched = cargo_build_cdylib(&manifest, "mismatched", Some(&target));
    let plain = cargo_build_cdylib(&manifest, "plain", Some(&target));
    (mismatched, plain)
}

/// The `faulty` test plugin (type `faulty`; inputs `panic`, `segfault`, `abort`, `hang`
/// and `print` misbehave on purpose, `error_code` fails with that code; option
/// `memory_bytes` is what it reports holding),
/// built twice: as usual (unwind) and with `panic = "abort"`. Returns (unwind, abort).
pub fn faulty_plugins() -> (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(build_faulty).clone()
}

const FAULTY_SOURCE: &str = r#"//! A plugin that misbehaves on request, for the host's isolation tests.

use model_manager_plugin::{
    export_plugin, Error, LoadConfig, Plugin, PluginInfo, PluginModel, Tensor, TensorData,
    TypeDeclaration, Value, Values,
};

#[derive(Default)]
pub struct Faulty;

impl Plugin for Faulty {
    fn info(&self) -> PluginInfo {
        PluginInfo::new("faulty", "0.1.0").with_type(
            TypeDeclaration::new("faulty", "Misbehaves on request")
                .with_options(&["memory_bytes", "tag"]),
        )
    }

    fn load(&self, config: &LoadConfig) -> Result<Box<dyn PluginModel>, Error> {
        let memory = config.option("memory_bytes").and_then(|v| v.as_u64());
        let tag = config.option("tag").and_then(|v| v.as_str()).unwrap_or("").to_owned();
        Ok(Box::new(Model { memory, tag }))
    }
}

struct Model {
    memory: Option<u64>,
    tag: String,
}

impl PluginModel for Model {
    fn infer(&self, inputs: Values) -> Result<Values, Error> {
        if inputs.contains_key("segfault") {
            // SAFETY: none; the point is to crash like a buggy plugin would.
            unsafe { std::ptr::null_mut::<u8>().write_volatile(1) };
        }
        if inputs.contains_key("abort") {
            std::process::abort();
        }
        if inputs.contains_key("hang") {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        if inputs.contains_key("panic") {
            panic!("asked to panic");
        }
        if inputs.contains_key("print") {
            println!("a plugin printing to stdout");
        }
        if let Some(Value::Text(code)) = inputs.get("error_code") {
            return Err(Error::new(code, "failing with the code asked for"));
        }
        let mut outputs = inputs;
        if outputs.contains_key("nan") {
            let odd = vec![f32::NAN, f32::INFINITY, -0.0];
            let tensor = Tensor { shape: vec![3], data: TensorData::F32(odd) };
            outputs.insert("nan".to_owned(), Value::Tensor(tensor));
        }
        outputs.insert("tag".to_owned(), Value::Text(self.tag.clone()));
        Ok(outputs)
    }

    fn memory_bytes(&self) -> Option<u64> {
        self.memory
    }
}

export_plugin!(Faulty);
"#;

fn build_faulty() -> (PathBuf, PathBuf) {
    let root = workspace_root();
    let fixtures = root.join("target/plugin-fixtures-faulty");
    write(
        &fixtures.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"faulty\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nmodel-manager-plugin = {{ path = {:?} }}\n\n[workspace]\n\n[profile.dev]\nopt-level = 1\n\n[profile.abort]\ninherits = \"dev\"\npanic = \"abort\"\n",
            root.join("crates/plugin-api").display().to_string()
        ),
    );
    write(&fixtures.join("src/lib.rs"), FAULTY_SOURCE);
    if !fixtures.join("Cargo.lock").exists() {
        write(
            &fixtures.join("Cargo.lock"),
            &std::fs::read_to_string(root.join("Cargo.lock")).unwrap(),
        );
    }
    let manifest = fixtures.join("Cargo.toml");
    let target = fixtures.join("target");
    let unwind = cargo_build_cdylib_with(&manifest, "faulty", Some(&target), &[]);
    let abort =
        cargo_build_cdylib_with(&manifest, "faulty", Some(&target), &["--profile", "abort"]);
    (unwind, abort)
}

/// The `origin` test plugin (type `origin`, answering `answer` = what its native dependency
/// `libmmorigin.so` returns, 42), linked with RUNPATH `$ORIGIN`, and that dependency built
/// twice: with its SONAME, and without one.
pub struct OriginFixture {
    /// The plugin library.
    pub plugin: PathBuf,
    /// `libmmorigin.so` with SONAME `libmmorigin.so`.
    pub dependency: PathBuf,
    /// `libmmorigin.so` without a SONAME.
    pub dependency_without_soname: PathBuf,
}

/// Builds [`OriginFixture`] (once per test binary) under `target/plugin-fixtures-origin`,
/// with the C compiler cargo links with (`$CC`, else `cc`).
pub fn origin_plugin() -> &'static OriginFixture {
    static BUILT: OnceLock<OriginFixture> = OnceLock::new();
    BUILT.get_or_init(build_origin)
}

const ORIGIN_SOURCE: &str = r#"//! A plugin whose native dependency sits beside it (RUNPATH `$ORIGIN`).

use model_manager_plugin::{
    export_plugin, Error, LoadConfig, Plugin, PluginInfo, PluginModel, TypeDeclaration, Value,
    Values,
};

extern "C" {
    fn mm_origin_answer() -> i32;
}

#[derive(Default)]
pub struct Origin;

impl Plugin for Origin {
    fn info(&self) -> PluginInfo {
        PluginInfo::new("origin", "0.1.0")
            .with_type(TypeDeclaration::new("origin", "Answers from its native dependency"))
    }

    fn load(&self, _config: &LoadConfig) -> Result<Box<dyn PluginModel>, Error> {
        Ok(Box::new(Model))
    }
}

struct Model;

impl PluginModel for Model {
    fn infer(&self, _inputs: Values) -> Result<Values, Error> {
        // SAFETY: a C function without arguments or state.
        let answer = unsafe { mm_origin_answer() };
        Ok(Values::from([("answer".to_owned(), Value::Text(answer.to_string()))]))
    }
}

export_plugin!(Origin);
"#;

fn build_origin() -> OriginFixture {
    let root = workspace_root();
    let fixtures = root.join("target/plugin-fixtures-origin");
    let source = fixtures.join("native/origin.c");
    write(&source, "int mm_origin_answer(void) { return 42; }\n");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let compile = |out: &Path, soname: bool| {
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let mut cc = Command::new(&compiler);
        cc.args(["-shared", "-fPIC", "-o"]).arg(out).arg(&source);
        if soname {
            cc.arg("-Wl,-soname,libmmorigin.so");
        }
        let status = cc.status().expect("the C compiler runs");
        assert!(status.success(), "compiling {} failed", out.display());
    };
    let dependency = fixtures.join("native/libmmorigin.so");
    let dependency_without_soname = fixtures.join("native-no-soname/libmmorigin.so");
    compile(&dependency, true);
    compile(&dependency_without_soname, false);
    write(
        &fixtures.join("Cargo.toml"),
        &format!(
            "[package]\nname = \"origin\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nmodel-manager-plugin = {{ path = {:?} }}\n\n[workspace]\n\n[profile.dev]\nopt-level = 1\n",
            root.join("crates/plugin-api").display().to_string()
        ),
    );
    write(
        &fixtures.join("build.rs"),
        &format!(
            "fn main() {{\n    println!(\"cargo:rustc-link-search=native={}\");\n    println!(\"cargo:rustc-link-lib=dylib=mmorigin\");\n    println!(\"cargo:rustc-cdylib-link-arg=-Wl,-rpath,$ORIGIN\");\n}}\n",
            dependency.parent().unwrap().display()
        ),
    );
    write(&fixtures.join("src/lib.rs"), ORIGIN_SOURCE);
    if !fixtures.join("Cargo.lock").exists() {
        write(
            &fixtures.join("Cargo.lock"),
            &std::fs::read_to_string(root.join("Cargo.lock")).unwrap(),
        );
    }
    // The faulty fixture's target: the same dependencies, built once.
    let target = root.join("target/plugin-fixtures-faulty/target");
    let plugin = cargo_build_cdylib(&fixtures.join("Cargo.toml"), "origin", Some(&target));
    OriginFixture {
        plugin,
        dependency,
        dependency_without_soname,
    }
}

/// Writes `text` to `path` unless it is there already; through a temporary file and a
/// rename, so another test binary building the same fixture never reads half a file.
fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&temporary, text).unwrap();
        std::fs::rename(&temporary, path).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            write(&dest, &std::fs::read_to_string(entry.path()).unwrap());
        }
    }
}
