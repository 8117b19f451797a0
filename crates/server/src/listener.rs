//! Accepting connections within limits: a cap on open connections (more are answered 503
//! and closed, never left to pile up), a header timeout that also closes idle keep-alive
//! connections, and a shutdown deadline after which requests still running are answered
//! 503 and connections still open then are dropped.

use crate::drain::Drain;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How connections are accepted and ended.
#[derive(Debug, Clone, Copy)]
pub struct ListenLimits {
    /// Open connections at once.
    pub max_connections: usize,
    /// Time to send a request's headers (and idle time of a keep-alive connection).
    pub header_timeout: Duration,
    /// Time in-flight requests get after shutdown begins.
    pub shutdown_grace: Duration,
}

/// How long the 503s of requests cut short by the end of the grace may take to be written
/// before their connections are dropped.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// What a refused connection is told before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 119\r\n\r\n{\"success\": false, \"code\": \"CAPACITY_EXHAUSTED\", \"message\": \"the server has too many open connections\", \"details\": {}}\n";

/// The file limit of this process, raised to its hard maximum where allowed: each
/// connection holds a file.
fn file_limit() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    usize::try_from(limit.rlim_cur).ok()
}

/// `max_connections`, lowered so that connections can never use up the process's files
/// (models, libraries and logs need some).
pub fn connection_cap(max_connections: usize) -> usize {
    match file_limit() {
        Some(files) => max_connections.min(files.saturating_sub(128).max(16)),
        None => max_connections,
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// within the grace period, answers those still running 503 (`drain`), and drops what is
/// left.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ListenLimits,
    shutdown: impl Future<Output = ()>,
    drain: Drain,
) {
    let slots = Arc::new(Semaphore::new(connection_cap(limits.max_connections)));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    let mut last_accept_error: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of files or similar: log once a second at most and let it ease.
                if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!("accepting a connection failed: {e}");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // Responses are written whole; Nagle would hold a response's tail for the client's
        // delayed ACK (~40 ms).
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            connections.spawn(refuse(stream));
            continue;
        };
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        connections.spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    let closed = graceful.shutdown();
    tokio::pin!(closed);
    if tokio::time::timeout(limits.shutdown_grace, &mut closed)
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "requests still running after the shutdown grace period; answering them 503"
        );
        drain.expire();
        if tokio::time::timeout(ANSWER_GRACE, &mut closed)
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                "connections still open after their 503; dropping them"
            );
            connections.abort_all();
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Tells a connection over the cap to come back later, and closes it.
async fn refuse(mut stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(REFUSED).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::REFUSED;

    #[test]
    fn the_refusal_is_a_complete_response() {
        let text = std::str::from_utf8(REFUSED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
