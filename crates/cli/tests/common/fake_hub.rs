//! A fake Hugging Face hub for the tests: a small HTTP/1.1 server on a free loopback port that
//! serves one model repository from a local folder, the way `huggingface_hub` and `hf-hub`
//! clients download it, with faults that can be switched on per file.
//!
//! What it speaks:
//!
//! - `HEAD` and `GET /{repo}/resolve/{rev}/{path}` with `{rev}` = `main` or [`COMMIT`]. Every
//!   200, 206 and 302 answer carries `x-repo-commit: COMMIT`.
//!   - "LFS" files (ending in `.safetensors`, `.onnx`, `.bin`, or larger than 1 MiB) answer
//!     `302 Found` with the relative `Location: /lfs/{sha256}`, `x-linked-etag: "{sha256}"`,
//!     `x-linked-size` and `etag: "{sha256}"`; `GET /lfs/{sha256}` then serves the content and
//!     `HEAD /lfs/{sha256}` its headers (with `etag: "{sha256}"` and `x-repo-commit`, since
//!     clients that follow the relative redirect read those from the final answer).
//!   - Other files answer 200 directly with `etag: "{git blob sha1}"`.
//! - `Range: bytes=N-` and `Range: bytes=N-M` give `206 Partial Content` with `Content-Range`,
//!   or `416` with `Content-Range: bytes */{len}` when `N` is past the end. Other range forms
//!   are ignored (200 with the whole content).
//! - `GET /api/models/{repo}` and `GET /api/models/{repo}/revision/{rev}` give
//!   `{"id", "sha", "siblings": [{"rfilename"}]}`.
//! - Unknown repository, revision or file: 404 with `x-error-code` `RepoNotFound`,
//!   `RevisionNotFound` or `EntryNotFound` and a small JSON body.
//!
//! Every answer says `connection: close` and the socket is closed after it, so clients
//! reconnect for each request.
//!
//! `hf-hub` asks for a file's metadata with a `GET` carrying `Range: bytes=0-0` (instead of a
//! `HEAD`); such a *probe* is not a content GET: [`FakeHub::content_gets`] does not count it and
//! the content faults ([`Fault::Truncate`], [`Fault::Cut`], [`Fault::Corrupt`]) neither apply to
//! it nor are used up by it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The commit sha of the served repository: what `x-repo-commit` says, and a revision that
/// resolves besides `main`.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Files larger than this are served as LFS files whatever their name.
const LFS_MIN_SIZE: usize = 1 << 20;

/// The longest request head read; a longer one is dropped unanswered.
const MAX_HEAD: usize = 64 * 1024;

/// A fault that [`FakeHub::fault`] switches on for a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 404 with `x-error-code: EntryNotFound` (to HEAD and GET of that file).
    NotFound,
    /// 500 Internal Server Error (to HEAD and GET).
    ServerError,
    /// GET of the content: 200 (or 206 for a Range request) whose honest Content-Length and body
    /// are only the first half of what was asked.
    Truncate,
    /// GET of the content: declares the full Content-Length, sends the first half of the body,
    /// then closes the connection.
    Cut,
    /// GET of the content: the body's bytes are sent with one byte flipped in the middle (same
    /// length).
    Corrupt,
    /// Accepts the request and never answers (HEAD and GET), holding the connection open (until
    /// the FakeHub is dropped).
    Hang,
    /// GET of the content: the whole, correct body, one byte every 50 ms (each read brings
    /// something, so a per-read timeout never fires).
    Trickle,
    /// 429 Too Many Requests with `Retry-After: N` seconds (to HEAD and GET).
    RateLimited(u32),
}

impl Fault {
    /// Whether the fault applies to content GETs only (rather than to every request).
    fn on_content(self) -> bool {
        matches!(
            self,
            Fault::Truncate | Fault::Cut | Fault::Corrupt | Fault::Trickle
        )
    }
}

/// One served file.
struct Entry {
    content: Vec<u8>,
    sha256: String,
    blob_sha1: String,
    lfs: bool,
}

impl Entry {
    fn new(path: &str, content: Vec<u8>) -> Self {
        let sha256 = hex(&Sha256::digest(&content));
        let mut sha1 = Sha1::new();
        sha1.update(format!("blob {}\0", content.len()).as_bytes());
        sha1.update(&content);
        let blob_sha1 = hex(&sha1.finalize());
        let lfs = [".safetensors", ".onnx", ".bin"]
            .iter()
            .any(|ext| path.ends_with(ext))
            || content.len() > LFS_MIN_SIZE;
        Self {
            content,
            sha256,
            blob_sha1,
            lfs,
        }
    }
}

/// What the server threads share with the [`FakeHub`].
struct Shared {
    repo: String,
    files: BTreeMap<String, Entry>,
    /// Per file: the fault and how many more requests get it.
    faults: Mutex<HashMap<String, (Fault, usize)>>,
    log: Mutex<Vec<String>>,
    content_gets: Mutex<HashMap<String, usize>>,
    stopped: Mutex<bool>,
    wake: Condvar,
    /// A clone of every open connection, by connection number, to shut them down on drop.
    conns: Mutex<HashMap<u64, TcpStream>>,
    /// Answer non-LFS resolves with the hub's relative 307 to `/api/resolve-cache/...`.
    redirect_small: std::sync::atomic::AtomicBool,
}

/// A fake Hugging Face hub serving one model repository from a folder; see the module doc.
/// Dropping it stops the server and closes every connection.
pub struct FakeHub {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl FakeHub {
    /// Serves every file under `folder` (recursively; paths with `/`) as repo `repo` (e.g.
    /// "acme/tiny-bert") at revision `main` (and at `COMMIT`).
    ///
    /// Panics when the folder cannot be read or no loopback port can be bound.
    pub fn start(repo: &str, folder: &Path) -> Self {
        let mut files = BTreeMap::new();
        collect(folder, "", &mut files);
        let listener = TcpListener::bind("127.0.0.1:0").expect("fake hub: bind a loopback port");
        let addr = listener.local_addr().expect("fake hub: local address");
        let shared = Arc::new(Shared {
            repo: repo.to_owned(),
            files,
            faults: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            content_gets: Mutex::new(HashMap::new()),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
            conns: Mutex::new(HashMap::new()),
            redirect_small: std::sync::atomic::AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("fake-hub-accept".into())
            .spawn(move || accept_loop(&listener, &for_thread))
            .expect("fake hub: spawn the accept thread");
        Self {
            shared,
            addr,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT` — what a client gets as HF_ENDPOINT.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next `times` requests that the fault applies to for `file` (path inside the repo) get
    /// `fault`; `usize::MAX` = always. Faults on content (Truncate, Cut, Corrupt) count only
    /// content GETs; NotFound/ServerError/Hang count HEADs and GETs.
    ///
    /// Content GETs are the GETs that send a file's bytes: the resolve GET of a non-LFS file and
    /// the `/lfs/{sha256}` GET of an LFS file, `Range: bytes=0-0` probes excepted.
    /// NotFound/ServerError/Hang apply to every HEAD and GET about the file, `/lfs/` ones and
    /// probes included. A file has one fault at a time: this replaces any earlier one, and
    /// `times == 0` clears it.
    pub fn fault(&self, file: &str, fault: Fault, times: usize) {
        let mut faults = lock(&self.shared.faults);
        if times == 0 {
            faults.remove(file);
        } else {
            faults.insert(file.to_owned(), (fault, times));
        }
    }

    /// From now on, answers the resolve of a non-LFS file as today's huggingface.co does:
    /// `307` with a relative `Location: /api/resolve-cache/models/{repo}/{COMMIT}/{path}` (and
    /// a small body whose length is not the file's), where the file is then served.
    pub fn redirect_small_files(&self) {
        self.shared
            .redirect_small
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Clears every fault.
    pub fn heal(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Every request so far, one line each: "METHOD PATH" plus " range=bytes=N-" when a Range
    /// header was sent and " auth=<value>" when an Authorization header was sent.
    ///
    /// PATH is the request target as sent (query string included); the range part shows the
    /// Range header's value as sent.
    pub fn requests(&self) -> Vec<String> {
        lock(&self.shared.log).clone()
    }

    /// Number of content GET requests (including the LFS redirect targets) for `file`.
    ///
    /// Counts the resolve GETs of a non-LFS file and the `/lfs/{sha256}` GETs of an LFS file
    /// (not the resolve GETs that answer 302), whatever they were answered, but not the
    /// `Range: bytes=0-0` probes.
    pub fn content_gets(&self, file: &str) -> usize {
        lock(&self.shared.content_gets)
            .get(file)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FakeHub {
    /// Stops accepting, closes every connection (hanging ones included) and joins every
    /// server thread.
    fn drop(&mut self) {
        *lock(&self.shared.stopped) = true;
        self.shared.wake.notify_all();
        // Unblocks `accept`, which then sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        let workers = self
            .acceptor
            .take()
            .and_then(|acceptor| acceptor.join().ok())
            .unwrap_or_default();
        for conn in lock(&self.shared.conns).values() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        for worker in workers {
            let _ = worker.join();
        }
    }
}

/// Locks a mutex, going on past a poisoned one.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Lowercase hex of bytes.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Reads every file under `dir` into `files`, keyed by its `/`-separated path under `prefix`.
fn collect(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Entry>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("fake hub: read folder {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("fake hub: read {}: {e}", dir.display()));
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("fake hub: stat {}: {e}", path.display()));
        if meta.is_dir() {
            collect(&path, &rel, files);
        } else if meta.is_file() {
            let content = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("fake hub: read {}: {e}", path.display()));
            let file = Entry::new(&rel, content);
            files.insert(rel, file);
        }
    }
}

/// Accepts connections until the hub is dropped, one thread per connection; returns the
/// threads that may still run.
fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) -> Vec<JoinHandle<()>> {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        if *lock(&shared.stopped) {
            break;
        }
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        workers.retain(|worker| !worker.is_finished());
        let id = next_id;
        next_id += 1;
        if let Ok(clone) = stream.try_clone() {
            lock(&shared.conns).insert(id, clone);
        }
        let for_thread = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("fake-hub-conn-{id}"))
            .spawn(move || {
                serve(&for_thread, stream);
                lock(&for_thread.conns).remove(&id);
            });
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(_) => {
                lock(&shared.conns).remove(&id);
            }
        }
    }
    workers
}

/// A parsed request head.
struct Request {
    method: String,
    target: String,
    range: Option<String>,
    auth: Option<String>,
}

impl Request {
    /// The request's line in the log.
    fn log_line(&self) -> String {
        let mut line = format!("{} {}", self.method, self.target);
        if let Some(range) = &self.range {
            let _ = write!(line, " range={range}");
        }
        if let Some(auth) = &self.auth {
            let _ = write!(line, " auth={auth}");
        }
        line
    }

    fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// A `Range: bytes=0-0` GET: a metadata probe, not a download.
    fn is_probe(&self) -> bool {
        self.range
            .as_deref()
            .is_some_and(|range| range.replace(' ', "") == "bytes=0-0")
    }

    /// A GET that downloads content (when its target has content): not HEAD, not a probe.
    fn is_content_get(&self) -> bool {
        self.method == "GET" && !self.is_probe()
    }
}

/// Reads a request head up to `\r\n\r\n`; `None` when the peer closes first or sends junk.
fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let mut request = Request {
        method,
        target,
        range: None,
        auth: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("range") {
            request.range = Some(value.trim().to_owned());
        } else if name.eq_ignore_ascii_case("authorization") {
            request.auth = Some(value.trim().to_owned());
        }
    }
    Some(request)
}

/// An answer to write.
struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// The Content-Length declared (the body's length but for [`Fault::Cut`]).
    content_length: usize,
    /// How many bytes of the body to send (all but for [`Fault::Cut`]).
    send: usize,
    /// Send the body one byte at a time ([`Fault::Trickle`]).
    trickle: bool,
}

impl Response {
    fn new(status: u16, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> Self {
        let len = body.len();
        Self {
            status,
            headers,
            body,
            content_length: len,
            send: len,
            trickle: false,
        }
    }

    /// A JSON error answer, with `x-error-code` when `code` is given.
    fn error(status: u16, code: Option<&str>, message: &str) -> Self {
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(code) = code {
            headers.push(("x-error-code", code.to_owned()));
        }
        let body = serde_json::json!({ "error": message })
            .to_string()
            .into_bytes();
        Self::new(status, headers, body)
    }

    fn entry_not_found() -> Self {
        Self::error(404, Some("EntryNotFound"), "Entry not found")
    }

    fn server_error() -> Self {
        Self::error(500, None, "Internal Server Error")
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        307 => "Temporary Redirect",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

/// The part of a file that a Range header asks for.
enum Span {
    /// No (usable) Range: the whole file, 200.
    Whole,
    /// `[start, end)`, 206.
    Part(usize, usize),
    /// An empty file asked from byte 0: 200 with an empty body and `Content-Range: bytes */0`
    /// (so that clients that read the size from Content-Range still can).
    EmptyFile,
    /// 416.
    Unsatisfiable,
}

/// Reads `bytes=N-` or `bytes=N-M`; other forms are ignored.
fn parse_range(range: Option<&str>, len: usize) -> Span {
    let Some(spec) = range.and_then(|range| range.trim().strip_prefix("bytes=")) else {
        return Span::Whole;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return Span::Whole;
    };
    let Ok(start) = first.trim().parse::<usize>() else {
        return Span::Whole;
    };
    let end = match last.trim() {
        "" => len,
        last => match last.parse::<usize>() {
            Ok(last) if last >= start => last.saturating_add(1).min(len),
            _ => return Span::Whole,
        },
    };
    if start >= len {
        if len == 0 && start == 0 {
            Span::EmptyFile
        } else {
            Span::Unsatisfiable
        }
    } else {
        Span::Part(start, end)
    }
}

/// Answers one request on a connection, then closes it.
fn serve(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Some(request) = read_request(&mut stream) else {
        return;
    };
    lock(&shared.log).push(request.log_line());
    if *lock(&shared.stopped) {
        return;
    }
    match shared.answer(&request) {
        None => shared.hang(),
        Some(response) => write_response(&mut stream, &response, request.is_head()),
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
    // Reads what the peer may still send so that closing does not reset the connection.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    for _ in 0..64 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Writes the answer, ignoring write errors (the peer may be gone).
fn write_response(stream: &mut TcpStream, response: &Response, head: bool) {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    for (name, value) in &response.headers {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    let _ = write!(
        out,
        "content-length: {}\r\nconnection: close\r\n\r\n",
        response.content_length
    );
    let mut bytes = out.into_bytes();
    let send = response.send.min(response.body.len());
    if response.trickle && !head {
        let _ = stream.write_all(&bytes);
        for byte in &response.body[..send] {
            if stream.write_all(std::slice::from_ref(byte)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        return;
    }
    if !head {
        bytes.extend_from_slice(&response.body[..send]);
    }
    let _ = stream.write_all(&bytes);
}

impl Shared {
    /// Waits until the hub is dropped.
    fn hang(&self) {
        let mut stopped = lock(&self.stopped);
        while !*stopped {
            stopped = self
                .wake
                .wait(stopped)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Uses up one request's worth of `file`'s fault when it is of the kind asked
    /// (content faults or the others).
    fn take_fault(&self, file: &str, content: bool) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let (fault, left) = faults.get_mut(file)?;
        let fault = *fault;
        if fault.on_content() != content || *left == 0 {
            return None;
        }
        if *left != usize::MAX {
            *left -= 1;
            if *left == 0 {
                faults.remove(file);
            }
        }
        Some(fault)
    }

    /// The answer to a request; `None` to hang.
    fn answer(&self, request: &Request) -> Option<Response> {
        if request.method != "GET" && !request.is_head() {
            return Some(Response::error(405, None, "Method not allowed"));
        }
        let path = request.target.split('?').next().unwrap_or_default();
        if let Some(rest) = path.strip_prefix("/api/models/") {
            return Some(self.api(rest));
        }
        if let Some(sha) = path.strip_prefix("/lfs/") {
            return self.lfs(request, sha);
        }
        if let Some(rest) = path.strip_prefix("/api/resolve-cache/models/") {
            // {org}/{name}/{commit}/{path}
            let mut parts = rest.splitn(4, '/');
            let (org, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (commit, file) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let repo = format!("{org}/{name}");
            return self.resolve_direct(request, &repo, &format!("{commit}/{file}"));
        }
        if let Some((repo, rest)) = path.split_once("/resolve/") {
            let repo = repo.trim_start_matches('/');
            let (_, file) = rest.split_once('/').unwrap_or((rest, ""));
            let small = self.files.get(file).is_some_and(|e| !e.lfs);
            if small
                && self
                    .redirect_small
                    .load(std::sync::atomic::Ordering::Relaxed)
            {
                let body = b"Temporary Redirect. Redirecting".to_vec();
                return Some(Response::new(
                    307,
                    vec![
                        ("x-repo-commit", COMMIT.to_owned()),
                        (
                            "location",
                            format!("/api/resolve-cache/models/{repo}/{COMMIT}/{file}"),
                        ),
                    ],
                    body,
                ));
            }
            return self.resolve(request, repo, rest);
        }
        Some(Response::error(404, None, "Not found"))
    }

    /// The 404 for an unknown repository or revision, if either is.
    fn check_repo(&self, repo: &str, rev: &str) -> Option<Response> {
        if repo != self.repo {
            Some(Response::error(
                404,
                Some("RepoNotFound"),
                "Repository not found",
            ))
        } else if rev != "main" && rev != COMMIT {
            Some(Response::error(
                404,
                Some("RevisionNotFound"),
                "Revision not found",
            ))
        } else {
            None
        }
    }

    /// `/api/models/{repo}[/revision/{rev}]`.
    fn api(&self, rest: &str) -> Response {
        let (repo, rev) = match rest.split_once("/revision/") {
            Some((repo, rev)) => (repo, rev.trim_end_matches('/')),
            None => (rest.trim_end_matches('/'), "main"),
        };
        if let Some(error) = self.check_repo(repo, rev) {
            return error;
        }
        let siblings: Vec<serde_json::Value> = self
            .files
            .keys()
            .map(|path| serde_json::json!({ "rfilename": path }))
            .collect();
        let body = serde_json::json!({
            "id": self.repo,
            "sha": COMMIT,
            "siblings": siblings,
        });
        Response::new(
            200,
            vec![("content-type", "application/json".to_owned())],
            body.to_string().into_bytes(),
        )
    }

    /// The answer to a fault that is not on content: `Some(None)` to hang.
    fn request_fault(&self, files: &[&str]) -> Option<Option<Response>> {
        let fault = files.iter().find_map(|file| self.take_fault(file, false))?;
        Some(match fault {
            Fault::NotFound => Some(Response::entry_not_found()),
            Fault::ServerError => Some(Response::server_error()),
            Fault::RateLimited(seconds) => {
                let mut busy = Response::error(429, None, "Too Many Requests");
                busy.headers.push(("retry-after", seconds.to_string()));
                Some(busy)
            }
            _ => None,
        })
    }

    /// A resolve-cache target: the file at a commit, never redirected again.
    fn resolve_direct(&self, request: &Request, repo: &str, rest: &str) -> Option<Response> {
        self.resolve(request, repo, rest)
    }

    /// `/{repo}/resolve/{rev}/{path}`.
    fn resolve(&self, request: &Request, repo: &str, rest: &str) -> Option<Response> {
        let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
        if let Some(error) = self.check_repo(repo, rev) {
            return Some(error);
        }
        let entry = self.files.get(file);
        if entry.is_some_and(|entry| !entry.lfs) {
            self.count_content_get(request, &[file]);
        }
        if let Some(answer) = self.request_fault(&[file]) {
            return answer;
        }
        let Some(entry) = entry else {
            return Some(Response::entry_not_found());
        };
        if !entry.lfs {
            return Some(self.content(request, &[file], entry, &entry.blob_sha1));
        }
        let sha = &entry.sha256;
        Some(Response::new(
            302,
            vec![
                ("x-repo-commit", COMMIT.to_owned()),
                ("location", format!("/lfs/{sha}")),
                ("x-linked-etag", format!("\"{sha}\"")),
                ("x-linked-size", entry.content.len().to_string()),
                ("etag", format!("\"{sha}\"")),
            ],
            Vec::new(),
        ))
    }

    /// Counts a content GET of `files` (the paths with the content asked) when `request` is one.
    fn count_content_get(&self, request: &Request, files: &[&str]) {
        if request.is_content_get() {
            let mut gets = lock(&self.content_gets);
            for file in files {
                *gets.entry((*file).to_owned()).or_default() += 1;
            }
        }
    }

    /// `/lfs/{sha256}`.
    fn lfs(&self, request: &Request, sha: &str) -> Option<Response> {
        let files: Vec<&str> = self
            .files
            .iter()
            .filter(|(_, entry)| entry.sha256 == sha)
            .map(|(path, _)| path.as_str())
            .collect();
        self.count_content_get(request, &files);
        if let Some(answer) = self.request_fault(&files) {
            return answer;
        }
        let Some(entry) = files.first().and_then(|file| self.files.get(*file)) else {
            return Some(Response::entry_not_found());
        };
        Some(self.content(request, &files, entry, &entry.sha256))
    }

    /// A file's content (or, for HEAD, its headers), honouring Range and the content faults.
    /// `files` are the repo paths with that content.
    fn content(&self, request: &Request, files: &[&str], entry: &Entry, etag: &str) -> Response {
        let len = entry.content.len();
        let fault = if request.is_content_get() {
            files.iter().find_map(|file| self.take_fault(file, true))
        } else {
            None
        };
        let mut headers = vec![
            ("x-repo-commit", COMMIT.to_owned()),
            ("etag", format!("\"{etag}\"")),
            ("accept-ranges", "bytes".to_owned()),
            ("content-type", "application/octet-stream".to_owned()),
        ];
        let (status, start, end) = match parse_range(request.range.as_deref(), len) {
            Span::Whole => (200, 0, len),
            Span::Part(start, end) => (206, start, end),
            Span::EmptyFile => {
                headers.push(("content-range", "bytes */0".to_owned()));
                (200, 0, 0)
            }
            Span::Unsatisfiable => {
                headers.push(("content-range", format!("bytes */{len}")));
                return Response::new(416, headers, Vec::new());
            }
        };
        let mut body = entry.content[start..end].to_vec();
        let mut content_length = body.len();
        let mut send = body.len();
        match fault {
            Some(Fault::Truncate) => {
                let half = body.len() / 2;
                body.truncate(half);
                content_length = half;
                send = half;
            }
            Some(Fault::Cut) => send = body.len() / 2,
            Some(Fault::Corrupt) if !body.is_empty() => {
                let middle = body.len() / 2;
                body[middle] ^= 0xff;
            }
            _ => {}
        }
        if status == 206 {
            let range = if content_length == 0 {
                format!("bytes */{len}")
            } else {
                format!("bytes {start}-{}/{len}", start + content_length - 1)
            };
            headers.push(("content-range", range));
        }
        Response {
            status,
            headers,
            body,
            content_length,
            send,
            trickle: fault == Some(Fault::Trickle),
        }
    }
}
