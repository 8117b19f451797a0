//! `keep_alive` of `POST /v1/models/{id}/load`: the model stays loaded (pinned) for that many
//! seconds, then the usual idle rules apply again. A later pin, keep-alive or unload of the
//! same model supersedes a pending release.

use model_manager_core::ModelManager;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pending timed releases, by model id.
#[derive(Default)]
pub struct KeepAlive {
    generations: Mutex<HashMap<String, u64>>,
}

impl KeepAlive {
    /// Cancels a pending release of `id`; returns the new generation.
    pub fn cancel(&self, id: &str) -> u64 {
        let mut generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        let generation = generations.entry(id.to_owned()).or_default();
        *generation += 1;
        *generation
    }

    fn is_current(&self, id: &str, generation: u64) -> bool {
        let generations = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        generations.get(id) == Some(&generation)
    }

    /// Unpins `id` after `duration` unless something superseded this call meanwhile.
    pub fn release_after(self: &Arc<Self>, manager: ModelManager, id: &str, duration: Duration) {
        let generation = self.cancel(id);
        let (this, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            if this.is_current(&id, generation) {
                let _ = manager.pin(&id, false);
            }
        });
    }
}
