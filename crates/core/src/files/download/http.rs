//! The hub's download protocol over HTTP: `HEAD .../resolve/<revision>/<file>` for the
//! commit, etag and size (an LFS file answers with a redirect to its content), then a
//! `GET` of the content into `blobs/<etag>.part`, resumed with `Range` after a cut.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Why a request did not give what was asked.
#[derive(Debug)]
pub enum Failure {
    /// The hub has no such file, revision or repository (404).
    Absent,
    /// No answer within the timeout.
    Timeout(String),
    /// A status the hub should not send, or one worth retrying (5xx).
    Status(u16, String),
    /// 429 (or 503) with the wait the hub asked for in `Retry-After`, when it said one.
    Busy(u16, String, Option<Duration>),
    /// The whole file did not arrive by its deadline (a hub that trickles).
    TooSlow(String),
    /// The connection failed or was cut.
    Network(String),
    /// The endpoint cannot be reached at all (no such host, connection refused).
    Unreachable(String),
    /// The local cache could not be written.
    Io(String),
}

impl Failure {
    /// Worth another try: a server error or a cut connection (not a timeout: a hub that
    /// hangs would make every try wait the whole timeout).
    pub fn retryable(&self) -> bool {
        match self {
            Self::Status(code, _) => *code >= 500 || *code == 429,
            Self::Network(_) | Self::Busy(..) => true,
            _ => false,
        }
    }

    /// How long the hub asked to wait before the next try.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy(_, _, wait) => *wait,
            _ => None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent => write!(f, "not found on the hub"),
            Self::Timeout(e) => write!(f, "no answer in time ({e})"),
            Self::Status(code, url) => write!(f, "HTTP {code} from {url}"),
            Self::Busy(code, url, Some(wait)) => {
                write!(
                    f,
                    "HTTP {code} from {url} (retry after {} s)",
                    wait.as_secs()
                )
            }
            Self::Busy(code, url, None) => write!(f, "HTTP {code} from {url}"),
            Self::TooSlow(e) => write!(f, "{e}"),
            Self::Network(e) => write!(f, "connection failed: {e}"),
            Self::Unreachable(e) => write!(f, "cannot reach the hub: {e}"),
            Self::Io(e) => write!(f, "cannot write the cache: {e}"),
        }
    }
}

/// Default of `hub.min_bytes_per_second`: the slowest a file may arrive, on average, past
/// the first `hub.timeout_seconds` (its deadline is that timeout plus a second per this
/// many bytes: a 90 MB model gets 23 minutes).
pub const MIN_BYTES_PER_SECOND: u64 = 64 * 1024;

/// The deadline of a whole file of `size` bytes, from now, at `min_bytes_per_second`.
pub fn file_deadline(timeout: Duration, size: u64, min_bytes_per_second: u64) -> Instant {
    Instant::now() + timeout + Duration::from_secs(size / min_bytes_per_second.max(1))
}

/// Redirects followed for one file's metadata.
const MAX_REDIRECTS: usize = 5;

/// What the hub says about one file.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// The commit the revision resolves to.
    pub commit: String,
    /// The content's etag (its hash), quotes removed.
    pub etag: String,
    /// The content's size in bytes.
    pub size: u64,
    /// Where the content is (the redirect target of an LFS file).
    pub content_url: String,
}

/// An HTTP client for one hub endpoint.
pub struct Hub {
    agent: ureq::Agent,
    /// `hub.timeout_seconds`: connect and read timeout, and the base of a file's deadline.
    pub timeout: Duration,
    /// `hub.min_bytes_per_second`: a file's deadline grows a second per this many bytes.
    pub min_bytes_per_second: u64,
    /// Bound on a whole metadata request (HEAD, file list), beside the per-read timeout.
    request_timeout: Duration,
    /// The endpoint, e.g. `https://huggingface.co`.
    pub endpoint: String,
    token: Option<String>,
}

fn is_timeout(e: &ureq::Transport) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("timed out") || text.contains("timeout") || text.contains("would block")
}

/// `Retry-After`: seconds, or an HTTP date (a date past is no wait).
fn retry_after(response: &ureq::Response) -> Option<Duration> {
    retry_after_value(
        response.header("retry-after")?,
        std::time::SystemTime::now(),
    )
}

/// The wait a `Retry-After` value asks for at `now`.
fn retry_after_value(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn failure(e: ureq::Error, url: &str) -> Failure {
    match e {
        ureq::Error::Status(404, _) => Failure::Absent,
        ureq::Error::Status(code @ (429 | 503), response) => {
            Failure::Busy(code, url.to_owned(), retry_after(&response))
        }
        ureq::Error::Status(code, _) => Failure::Status(code, url.to_owned()),
        ureq::Error::Transport(t) if is_timeout(&t) => Failure::Timeout(t.to_string()),
        ureq::Error::Transport(t)
            if matches!(
                t.kind(),
                ureq::ErrorKind::Dns
                    | ureq::ErrorKind::ConnectionFailed
                    | ureq::ErrorKind::InvalidUrl
            ) =>
        {
            Failure::Unreachable(t.to_string())
        }
        ureq::Error::Transport(t) => Failure::Network(t.to_string()),
    }
}

fn io_failure(e: std::io::Error) -> Failure {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
            Failure::Timeout(e.to_string())
        }
        _ => Failure::Network(e.to_string()),
    }
}

impl Hub {
    /// A client for `endpoint` with connect and read timeouts of `timeout`, whose files must
    /// arrive at `min_bytes_per_second` on average past it; `token` is sent to the endpoint
    /// only (never to the hosts it redirects to).
    pub fn new(
        endpoint: &str,
        token: Option<String>,
        timeout: Duration,
        min_bytes_per_second: u64,
    ) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(timeout)
            .timeout_read(timeout)
            .timeout_write(timeout)
            .redirects(0)
            .user_agent(concat!("model-manager/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent,
            timeout,
            min_bytes_per_second: min_bytes_per_second.max(1),
            request_timeout: timeout * 2,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            token,
        }
    }

    fn request(&self, method: &str, url: &str) -> ureq::Request {
        let request = self.agent.request(method, url);
        match &self.token {
            Some(token) if self.on_endpoint(url) => {
                request.set("Authorization", &format!("Bearer {token}"))
            }
            _ => request,
        }
    }

    fn absolute(&self, location: &str) -> String {
        match location.starts_with('/') {
            true => format!("{}{location}", self.endpoint),
            false => location.to_owned(),
        }
    }

    /// The commit, etag and size of `file` at `revision` of model `repo`. An LFS file
    /// answers with a redirect carrying `x-linked-etag` / `x-linked-size` (its content is at
    /// the redirect's target); other redirects (the hub's relative ones to a resolve cache)
    /// are followed on the endpoint's host, and the final answer describes the file.
    pub fn head(&self, repo: &str, revision: &str, file: &str) -> Result<FileMeta, Failure> {
        let mut url = format!("{}/{repo}/resolve/{revision}/{file}", self.endpoint);
        let mut commit_seen: Option<String> = None;
        for _ in 0..MAX_REDIRECTS {
            let response = self
                .request("HEAD", &url)
                .timeout(self.request_timeout)
                .set("Accept-Encoding", "identity")
                .call()
                .map_err(|e| failure(e, &url))?;
            let header = |name: &str| response.header(name).map(str::to_owned);
            if let Some(commit) = header("x-repo-commit") {
                commit_seen = Some(commit);
            }
            let redirect = (300..=399).contains(&response.status());
            let location = header("location").map(|l| self.absolute(&l));
            if redirect && header("x-linked-etag").is_none() {
                match location {
                    Some(next) if self.on_endpoint(&next) => {
                        url = next;
                        continue;
                    }
                    _ => {
                        return Err(Failure::Status(
                            response.status(),
                            format!("{url} (redirect off the endpoint)"),
                        ))
                    }
                }
            }
            let etag = header("x-linked-etag")
                .or_else(|| header("etag"))
                .ok_or_else(|| Failure::Status(response.status(), format!("{url} (no etag)")))?;
            // A redirect's own length is its body's: only x-linked-size describes the file.
            let size = match redirect {
                true => header("x-linked-size"),
                false => header("x-linked-size").or_else(|| header("content-length")),
            }
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Failure::Status(response.status(), format!("{url} (no size)")))?;
            let content_url = match (redirect, location) {
                (true, Some(location)) => location,
                (true, None) => {
                    return Err(Failure::Status(
                        response.status(),
                        format!("{url} (no location)"),
                    ))
                }
                (false, _) => url,
            };
            return Ok(FileMeta {
                commit: commit_seen.unwrap_or_else(|| revision.to_owned()),
                etag: etag.trim_start_matches("W/").trim_matches('"').to_owned(),
                size,
                content_url,
            });
        }
        Err(Failure::Status(310, format!("{url} (too many redirects)")))
    }

    /// Whether `url` is on the endpoint (same scheme, host and port), where the token may go.
    fn on_endpoint(&self, url: &str) -> bool {
        url == self.endpoint || url.starts_with(&format!("{}/", self.endpoint))
    }

    /// Appends the content past what `part` holds (all of it when it holds nothing or the
    /// server ignores `Range`), calling `progress` with the bytes held. Never writes past
    /// `size`. Returns when the body ends (the caller checks the size), or `TooSlow` at
    /// `deadline` (a body that trickles never trips a read timeout).
    pub fn fetch_into(
        &self,
        meta: &FileMeta,
        part: &Path,
        progress: &mut dyn FnMut(u64),
        deadline: Instant,
    ) -> Result<(), Failure> {
        let too_slow = || {
            Failure::TooSlow(format!(
                "{} did not arrive by its deadline (hub.timeout_seconds plus a second per {} bytes, hub.min_bytes_per_second)",
                meta.content_url,
                self.min_bytes_per_second
            ))
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(too_slow());
        }
        let io = |e: std::io::Error| Failure::Io(format!("{}: {e}", part.display()));
        let mut have = std::fs::metadata(part).map_or(0, |m| m.len());
        if have > meta.size {
            std::fs::remove_file(part).map_err(io)?;
            have = 0;
        }
        if have == meta.size {
            // An empty file has nothing to fetch but must still exist.
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(part)
                .map_err(io)?;
            return Ok(());
        }
        let mut request = self
            .request("GET", &meta.content_url)
            .timeout(left)
            .set("Accept-Encoding", "identity");
        if have > 0 {
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = request
            .call()
            .map_err(|e| match failure(e, &meta.content_url) {
                Failure::Timeout(_) if Instant::now() >= deadline => too_slow(),
                other => other,
            })?;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(part)
            .map_err(io)?;
        let resumes_here = response
            .header("content-range")
            .and_then(|r| r.strip_prefix("bytes "))
            .and_then(|r| r.split_once('-'))
            .and_then(|(start, _)| start.trim().parse::<u64>().ok())
            == Some(have);
        match response.status() {
            206 if resumes_here => {}
            206 => {
                // Not the range asked for: start over rather than splice wrong bytes.
                out.set_len(0).map_err(io)?;
                return Err(Failure::Network(format!(
                    "{} answered a range that does not start at byte {have}",
                    meta.content_url
                )));
            }
            200 => {
                out.set_len(0).map_err(io)?;
                have = 0;
            }
            code => return Err(Failure::Status(code, meta.content_url.clone())),
        }
        progress(have);
        let mut body = response.into_reader().take(meta.size - have);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(_) if Instant::now() >= deadline => {
                    out.flush().map_err(io)?;
                    return Err(too_slow());
                }
                Err(e) => {
                    out.flush().map_err(io)?;
                    // Whatever arrived is kept: a stall mid-body resumes like a cut.
                    return Err(Failure::Network(io_failure(e).to_string()));
                }
            };
            out.write_all(&buf[..n]).map_err(io)?;
            have += n as u64;
            progress(have);
            if Instant::now() >= deadline && have < meta.size {
                out.flush().map_err(io)?;
                return Err(too_slow());
            }
        }
        out.sync_all().map_err(io)
    }

    /// The files of model `repo` at `revision` (`GET /api/models/<repo>/revision/<rev>`).
    pub fn list(&self, repo: &str, revision: &str) -> Result<(String, Vec<String>), Failure> {
        let url = format!("{}/api/models/{repo}/revision/{revision}", self.endpoint);
        let response = self
            .request("GET", &url)
            .timeout(self.request_timeout)
            .call()
            .map_err(|e| failure(e, &url))?;
        let text = response.into_string().map_err(io_failure)?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Failure::Status(200, format!("{url} (not a file list: {e})")))?;
        let commit = json["sha"].as_str().unwrap_or(revision).to_owned();
        let files = json["siblings"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|f| f["rfilename"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok((commit, files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after_value(" 7 ", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after_value(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(retry_after_value(&earlier, now), Some(Duration::ZERO));
        assert_eq!(retry_after_value("soon", now), None);
    }

    #[test]
    fn a_file_s_deadline_grows_with_its_size_at_the_set_speed() {
        let timeout = Duration::from_secs(2);
        let left = |min| file_deadline(timeout, 10 << 20, min) - Instant::now();
        let default = left(MIN_BYTES_PER_SECOND);
        assert!(default > Duration::from_secs(161) && default <= Duration::from_secs(162));
        let slow_link = left(1024);
        assert!(slow_link > Duration::from_secs(10241), "{slow_link:?}");
        assert!(
            left(0) > Duration::from_secs(1 << 20),
            "0 is taken as 1 byte per second"
        );
    }
}
