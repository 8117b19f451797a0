//! Whether the remote tier is worth asking: a few failures in a row take it out of the
//! request path (so a dead Redis costs requests nothing), and a background probe brings it
//! back when the store answers again. Only these changes are logged, so a Redis outage
//! logs two lines, not one per request.

use parking_lot::Mutex;
use serde::Serialize;

/// Failures in a row that take the tier out of the request path.
const TRIP_AFTER: u32 = 3;

/// Where the remote tier stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteState {
    /// Not answered yet since start; requests do not wait for it.
    #[default]
    Connecting,
    /// Answering; requests use it.
    Connected,
    /// Failing; requests skip it while a background probe retries.
    Down,
}

impl RemoteState {
    /// The state's name, as in status JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Down => "down",
        }
    }
}

#[derive(Default)]
struct HealthState {
    state: RemoteState,
    streak: u32,
    last_error: Option<String>,
    probing: bool,
}

/// The tier's state and its failure streak.
#[derive(Default)]
pub(super) struct Health(Mutex<HealthState>);

impl Health {
    pub fn state(&self) -> RemoteState {
        self.0.lock().state
    }

    pub fn last_error(&self) -> Option<String> {
        self.0.lock().last_error.clone()
    }

    /// Whether requests should use the tier now.
    pub fn usable(&self) -> bool {
        self.state() == RemoteState::Connected
    }

    pub fn succeeded(&self, url: &str) {
        Self::connected(&mut self.0.lock(), url);
    }

    /// The probe got an answer: the tier is connected and the probe ends, in one step so
    /// that a failure cannot trip the tier between the two and find a probe still claimed.
    pub fn probe_answered(&self, url: &str) {
        let mut h = self.0.lock();
        h.probing = false;
        Self::connected(&mut h, url);
    }

    fn connected(h: &mut HealthState, url: &str) {
        h.streak = 0;
        if h.state != RemoteState::Connected {
            tracing::info!(url, "remote embedding cache connected");
            h.state = RemoteState::Connected;
        }
    }

    /// Records a failure; true when it takes the tier out of the request path (the caller
    /// then starts the probe).
    pub fn failed(&self, url: &str, error: String) -> bool {
        let mut h = self.0.lock();
        h.streak += 1;
        let trips = h.state == RemoteState::Connecting
            || (h.state == RemoteState::Connected && h.streak >= TRIP_AFTER);
        if trips {
            tracing::warn!(
                url,
                "remote embedding cache unavailable, requests go on without it until it answers: {error}"
            );
            h.state = RemoteState::Down;
        }
        h.last_error = Some(error);
        trips
    }

    /// Records an error that does not count toward taking the tier out (a failed write).
    pub fn note(&self, error: String) {
        self.0.lock().last_error = Some(error);
    }

    /// Claims the probe; false when one already runs.
    pub fn start_probe(&self) -> bool {
        !std::mem::replace(&mut self.0.lock().probing, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_after_a_streak_and_recovers() {
        let h = Health::default();
        assert!(!h.usable(), "not used before the first answer");
        assert!(
            h.failed("u", "refused".into()),
            "a failed first contact trips"
        );
        h.succeeded("u");
        assert!(h.usable());
        assert!(!h.failed("u", "e1".into()));
        h.succeeded("u");
        assert!(!h.failed("u", "e2".into()));
        assert!(!h.failed("u", "e3".into()));
        assert!(h.failed("u", "e4".into()), "third failure in a row");
        assert_eq!(h.state(), RemoteState::Down);
        assert_eq!(h.last_error().as_deref(), Some("e4"));
        assert!(!h.failed("u", "e5".into()), "already down");
        assert!(h.start_probe() && !h.start_probe());
        h.probe_answered("u");
        assert!(h.usable());
        assert!(h.start_probe());
    }
}
