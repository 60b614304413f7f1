//! [`Clock`]: where the APIs read the time, so tests can move it (an idempotency key's
//! one-hour window, say) without waiting.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};

#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system's clock.
    pub fn system() -> Self {
        Self(Arc::new(Utc::now))
    }

    /// A clock that reads the system's time plus an offset the returned handle can grow.
    pub fn adjustable() -> (Self, ClockHandle) {
        let offset = Arc::new(Mutex::new(TimeDelta::zero()));
        let read = offset.clone();
        let clock = Self(Arc::new(move || {
            Utc::now() + *read.lock().expect("not poisoned")
        }));
        (clock, ClockHandle(offset))
    }

    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// Moves an [`Clock::adjustable`] clock forward.
#[derive(Clone)]
pub struct ClockHandle(Arc<Mutex<TimeDelta>>);

impl ClockHandle {
    pub fn advance(&self, by: TimeDelta) {
        *self.0.lock().expect("not poisoned") += by;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_forward_on_demand() {
        let (clock, handle) = Clock::adjustable();
        let before = clock.now();
        handle.advance(TimeDelta::hours(2));
        assert!(clock.now() - before >= TimeDelta::hours(2));
    }
}
