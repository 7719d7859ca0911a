//! Repeated log lines kept to a few a minute of each kind. An outage refuses every exchange the
//! same way (the audit log down, a service down, a CRL past its next update refusing every
//! handshake), and a line per refusal would flood the journal, whose rate limit then drops
//! lines, perhaps the one that says when the outage began or ended. Each kind gets
//! [`PER_MINUTE`] lines a minute at its level; the rest go to `debug`, and the next line said
//! tells how many were left out. Nothing is lost: each refused exchange has its audit record,
//! under the id its caller was given.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Lines of one kind said a minute.
pub const PER_MINUTE: u32 = 10;

const MINUTE: Duration = Duration::from_secs(60);

/// Kinds remembered at most; past it, those quiet for a minute are forgotten, and a new kind is
/// said without being counted when none is.
const MOST_KINDS: usize = 1024;

/// The lines said and left out of each kind in its current minute.
#[derive(Debug, Default)]
pub struct LogBudget {
    kinds: Mutex<HashMap<String, Window>>,
}

#[derive(Debug)]
struct Window {
    began: Instant,
    said: u32,
    left_out: u64,
}

impl LogBudget {
    /// Whether a line of `kind` may be said at its level now: `Some` with how many of its kind
    /// were left out since the last one said, or `None` (say it at `debug`).
    pub fn take(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(PoisonError::into_inner);
        if kinds.len() >= MOST_KINDS && !kinds.contains_key(kind) {
            kinds.retain(|_, w| now.duration_since(w.began) < MINUTE);
            if kinds.len() >= MOST_KINDS {
                return Some(0);
            }
        }
        // A known kind is found without allocating its name: the usual case in an outage.
        if !kinds.contains_key(kind) {
            kinds.insert(kind.to_owned(), Window { began: now, said: 0, left_out: 0 });
        }
        let Some(window) = kinds.get_mut(kind) else { return Some(0) };
        if now.duration_since(window.began) >= MINUTE {
            window.began = now;
            window.said = 0;
        }
        if window.said < PER_MINUTE {
            window.said += 1;
            Some(std::mem::take(&mut window.left_out))
        } else {
            window.left_out += 1;
            None
        }
    }
}

/// The words a line adds when `left_out` lines of its kind before it were not said: nothing when
/// none were.
pub fn left_out_note(left_out: u64) -> String {
    if left_out == 0 {
        String::new()
    } else {
        format!(" [{left_out} more like this were logged at debug only before it, as more than {PER_MINUTE} a minute]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_said_ten_times_a_minute_and_the_next_said_tells_how_many_were_left_out() {
        let budget = LogBudget::default();
        let t0 = Instant::now();
        for _ in 0..PER_MINUTE {
            assert_eq!(budget.take("Server.AuditUnavailable", t0), Some(0));
        }
        for _ in 0..25 {
            assert_eq!(budget.take("Server.AuditUnavailable", t0), None);
        }
        assert_eq!(budget.take("Client.AccessDenied", t0), Some(0), "another kind has its own budget");
        assert_eq!(budget.take("Server.AuditUnavailable", t0 + MINUTE), Some(25), "a minute on");
        assert_eq!(budget.take("Server.AuditUnavailable", t0 + MINUTE), Some(0), "told once");
        assert!(left_out_note(25).contains("25 more like this") && left_out_note(0).is_empty());
    }

    #[test]
    fn kinds_are_bounded() {
        let budget = LogBudget::default();
        let t0 = Instant::now();
        for i in 0..MOST_KINDS {
            assert_eq!(budget.take(&format!("kind {i}"), t0), Some(0));
        }
        // Full of recent kinds: a new one is said, not remembered.
        assert_eq!(budget.take("one more", t0), Some(0));
        assert_eq!(budget.kinds.lock().unwrap().len(), MOST_KINDS);
        // A minute on, the quiet ones are forgotten to make room.
        assert_eq!(budget.take("one more", t0 + MINUTE), Some(0));
        assert_eq!(budget.kinds.lock().unwrap().len(), 1);
    }
}
