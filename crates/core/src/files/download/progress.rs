//! Download progress for whoever shows it (the CLI's progress bars): one observer per
//! process, called from the downloading thread.

use parking_lot::RwLock;
use std::sync::Arc;

/// One step of a file's download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadEvent {
    /// The repository.
    pub repo: String,
    /// The file inside it.
    pub file: String,
    /// Bytes held so far (a resumed download starts above 0).
    pub done: u64,
    /// The file's size.
    pub total: u64,
    /// `Some(ok)` once the file is finished (verified and in place) or given up.
    pub finished: Option<bool>,
}

type Observer = Arc<dyn Fn(&DownloadEvent) + Send + Sync>;

static OBSERVER: RwLock<Option<Observer>> = RwLock::new(None);

/// Sends every download event of this process to `observer` (replacing any other).
pub fn observe_downloads(observer: impl Fn(&DownloadEvent) + Send + Sync + 'static) {
    *OBSERVER.write() = Some(Arc::new(observer));
}

fn emit(event: DownloadEvent) {
    let observer = OBSERVER.read().clone();
    if let Some(observer) = observer {
        observer(&event);
    }
}

/// A progress callback for one file.
pub(super) fn reporter(repo: &str, file: &str, total: u64) -> impl FnMut(u64) {
    let (repo, file) = (repo.to_owned(), file.to_owned());
    move |done| {
        emit(DownloadEvent {
            repo: repo.clone(),
            file: file.clone(),
            done,
            total,
            finished: None,
        })
    }
}

/// The file is done (`ok`) or given up.
pub(super) fn finished(repo: &str, file: &str, ok: bool) {
    emit(DownloadEvent {
        repo: repo.to_owned(),
        file: file.to_owned(),
        done: 0,
        total: 0,
        finished: Some(ok),
    });
}
