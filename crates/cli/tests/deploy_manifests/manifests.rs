//! Reading the deployment files: YAML documents, their labels and ports, the settings
//! file and the Dockerfile.

use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn deploy_dir() -> PathBuf {
    repo().join("deploy")
}

pub fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{relative}: cannot read {}: {e}", path.display()))
}

/// One YAML document and the file it came from (relative to the repository root).
pub struct Doc {
    pub file: String,
    pub value: Value,
}

impl Doc {
    pub fn kind(&self) -> Option<&str> {
        self.value.get("kind").and_then(Value::as_str)
    }

    pub fn name(&self) -> Option<&str> {
        at(&self.value, &["metadata", "name"]).and_then(Value::as_str)
    }

    /// `file: Kind/name` for assertion messages.
    pub fn what(&self) -> String {
        match self.kind() {
            Some(kind) => format!(
                "{}: {kind}/{}",
                self.file,
                self.name().unwrap_or("<unnamed>")
            ),
            None => self.file.clone(),
        }
    }

    pub fn field(&self, path: &[&str]) -> &Value {
        at(&self.value, path)
            .unwrap_or_else(|| panic!("{}: missing field {}", self.what(), path.join(".")))
    }

    pub fn str_field(&self, path: &[&str]) -> &str {
        self.field(path)
            .as_str()
            .unwrap_or_else(|| panic!("{}: field {} is not a string", self.what(), path.join(".")))
    }
}

/// The value at `path` (mapping keys) under `value`.
pub fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

pub fn seq(value: Option<&Value>) -> &[Value] {
    value
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

/// Every document of every `*.yaml` / `*.yml` file under `deploy/`; a parse error fails.
pub fn load_all() -> Vec<Doc> {
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    files.sort();
    assert!(!files.is_empty(), "deploy/: no YAML files found");
    let root = repo();
    let mut docs = Vec::new();
    for path in files {
        let file = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: cannot read: {e}"));
        for (i, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{file}: document {} is not valid YAML: {e}", i + 1));
            if !value.is_null() {
                docs.push(Doc {
                    file: file.clone(),
                    value,
                });
            }
        }
    }
    docs
}

/// The Kubernetes resource `kind`/`name`; exactly one must exist.
pub fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    let found: Vec<&Doc> = docs
        .iter()
        .filter(|d| d.kind() == Some(kind) && d.name() == Some(name))
        .collect();
    match found.as_slice() {
        [one] => one,
        [] => panic!("deploy/: no {kind} named `{name}`"),
        several => panic!(
            "deploy/: {kind} `{name}` is defined {} times ({})",
            several.len(),
            several
                .iter()
                .map(|d| d.file.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn of_kind<'a>(docs: &'a [Doc], kind: &'a str) -> impl Iterator<Item = &'a Doc> {
    docs.iter().filter(move |d| d.kind() == Some(kind))
}

/// A label map (`metadata.labels`, `matchLabels`, a Service selector) as strings.
pub fn labels(doc: &Doc, path: &[&str]) -> BTreeMap<String, String> {
    let map = doc
        .field(path)
        .as_mapping()
        .unwrap_or_else(|| panic!("{}: {} is not a mapping", doc.what(), path.join(".")));
    map.iter()
        .map(|(k, v)| {
            let k = k.as_str().unwrap_or_else(|| {
                panic!("{}: {} has a non-string key", doc.what(), path.join("."))
            });
            let v = v.as_str().unwrap_or_else(|| {
                panic!(
                    "{}: {}.{k} is not a string (quote it)",
                    doc.what(),
                    path.join(".")
                )
            });
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Whether `selector` (non-empty) selects pods labelled `pod_labels`.
pub fn selects(selector: &BTreeMap<String, String>, pod_labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
}

pub fn pod_labels(deployment: &Doc) -> BTreeMap<String, String> {
    labels(deployment, &["spec", "template", "metadata", "labels"])
}

pub fn containers(deployment: &Doc) -> &[Value] {
    let containers = seq(at(
        &deployment.value,
        &["spec", "template", "spec", "containers"],
    ));
    assert!(
        !containers.is_empty(),
        "{}: spec.template.spec.containers is empty",
        deployment.what()
    );
    containers
}

/// `(name, containerPort)` of every port the Deployment's containers declare.
pub fn declared_ports(deployment: &Doc) -> Vec<(Option<String>, u64)> {
    containers(deployment)
        .iter()
        .flat_map(|c| seq(c.get("ports")))
        .map(|p| {
            let number = p
                .get("containerPort")
                .and_then(Value::as_u64)
                .unwrap_or_else(|| {
                    panic!(
                        "{}: a container port has no numeric containerPort",
                        deployment.what()
                    )
                });
            (
                p.get("name").and_then(Value::as_str).map(str::to_owned),
                number,
            )
        })
        .collect()
}

/// The container port a Service `targetPort` or probe `port` (name or number) refers to.
pub fn resolve_port(deployment: &Doc, port: &Value) -> Option<u64> {
    let ports = declared_ports(deployment);
    match port {
        Value::String(name) => ports
            .iter()
            .find(|(n, _)| n.as_deref() == Some(name.as_str()))
            .map(|(_, p)| *p),
        Value::Number(n) => n.as_u64().filter(|n| ports.iter().any(|(_, p)| p == n)),
        _ => None,
    }
}

/// The `mm` server's port: the container port named `http`.
pub fn http_port(deployment: &Doc) -> u64 {
    resolve_port(deployment, &Value::String("http".into())).unwrap_or_else(|| {
        panic!(
            "{}: no container port named `http` (the Service, probes and docs use that name)",
            deployment.what()
        )
    })
}

/// The container of the `mm` Deployment that runs the server.
pub fn mm_container(deployment: &Doc) -> &Value {
    let all = containers(deployment);
    all.iter()
        .find(|c| c.get("name").and_then(Value::as_str) == Some("mm"))
        .unwrap_or(&all[0])
}

pub fn string_list(value: Option<&Value>) -> Vec<String> {
    seq(value)
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => panic!("not a scalar in an args/command list: {other:?}"),
        })
        .collect()
}

/// The port of every `--addr HOST:PORT` / `--addr=HOST:PORT` in a list of words.
pub fn addr_ports(words: &[String]) -> Vec<u64> {
    let mut ports = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let addr = if word == "--addr" {
            words.get(i + 1).map(String::as_str)
        } else {
            word.strip_prefix("--addr=")
        };
        if let Some(addr) = addr {
            let port = addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .unwrap_or_else(|| panic!("`--addr {addr}` has no port"));
            ports.push(port);
        }
    }
    ports
}

/// The value of `--config PATH` / `--config=PATH` in a list of words.
pub fn config_arg(words: &[String]) -> Option<String> {
    words.iter().enumerate().find_map(|(i, word)| {
        if word == "--config" {
            words.get(i + 1).cloned()
        } else {
            word.strip_prefix("--config=").map(str::to_owned)
        }
    })
}

pub fn env_value(container: &Value, name: &str) -> Option<String> {
    seq(container.get("env"))
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|e| e.get("value").and_then(Value::as_str))
        .map(str::to_owned)
}

/// `(host, port)` of a `redis://[user@]host[:port][/db]` URL.
pub fn redis_host_port(url: &str, what: &str) -> (String, u64) {
    let rest = url
        .strip_prefix("redis://")
        .unwrap_or_else(|| panic!("{what}: `{url}` is not a redis:// URL"));
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    match host_port.rsplit_once(':') {
        Some((host, port)) => (
            host.to_owned(),
            port.parse()
                .unwrap_or_else(|_| panic!("{what}: bad port in `{url}`")),
        ),
        None => (host_port.to_owned(), 6379),
    }
}

/// A Service named `host` exists and serves `port`.
pub fn assert_service_serves(docs: &[Doc], host: &str, port: u64, what: &str) {
    let service = of_kind(docs, "Service")
        .find(|s| s.name() == Some(host))
        .unwrap_or_else(|| panic!("{what}: host `{host}` is not a Service under deploy/"));
    let ports: Vec<u64> = seq(at(&service.value, &["spec", "ports"]))
        .iter()
        .filter_map(|p| p.get("port").and_then(Value::as_u64))
        .collect();
    assert!(
        ports.contains(&port),
        "{what}: port {port} is not a spec.ports[].port of {} (it has {ports:?})",
        service.what()
    );
}

/// Every dotted key of a TOML table, with its value.
pub fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, toml::Value>) {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            toml::Value::Table(inner) => flatten(&key, inner, out),
            other => {
                out.insert(key, other.clone());
            }
        }
    }
}

pub fn parse_settings(text: &str, what: &str) -> BTreeMap<String, toml::Value> {
    let table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| panic!("{what}: not valid TOML: {e}"));
    let mut flat = BTreeMap::new();
    flatten("", &table, &mut flat);
    flat
}

/// The Dockerfile's instructions (continuation lines joined, comments dropped) as
/// `(INSTRUCTION, rest)`.
pub fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Docker drops comment and empty lines, inside continuations too.
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let joined = std::mem::take(&mut current);
        if let Some((op, rest)) = joined.split_once(char::is_whitespace) {
            out.push((op.to_ascii_uppercase(), rest.trim().to_owned()));
        }
    }
    out
}

/// The words of a Dockerfile `CMD` / `ENTRYPOINT`, exec (JSON) or shell form.
pub fn dockerfile_words(rest: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(rest) {
        Ok(words) => words,
        Err(_) => rest.split_whitespace().map(str::to_owned).collect(),
    }
}
