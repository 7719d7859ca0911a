//! Maintenance mode: the gateway says it is not ready, so that load balancers take it out of
//! rotation, while it goes on serving what still reaches it. Kept across reloads, not restarts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use splpd_certs::id::AdminId;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Who turned maintenance mode on, when and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceState {
    /// The operator.
    pub by: AdminId,
    /// When.
    pub since: OffsetDateTime,
    /// The `X-Road-Issue` the operator gave, if any.
    pub reason: String,
}

impl MaintenanceState {
    /// One line for logs and readiness: who, since when, why.
    pub fn describe(&self) -> String {
        let since = self.since.format(&Rfc3339).unwrap_or_default();
        if self.reason.is_empty() {
            format!("set by {} at {since}", self.by)
        } else {
            format!("set by {} at {since} ({})", self.by, self.reason)
        }
    }
}

/// The gateway's maintenance mode.
#[derive(Debug, Default)]
pub struct Maintenance {
    /// Read on every gRPC health check; the state behind it only when it is set.
    on: AtomicBool,
    state: Mutex<Option<MaintenanceState>>,
}

impl Maintenance {
    /// Whether maintenance mode is on.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Who set it, when and why, while it is on.
    pub fn state(&self) -> Option<MaintenanceState> {
        if !self.is_on() {
            return None;
        }
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Turns it on and returns the new state. Turned on again, it keeps when it began; a new
    /// reason replaces the old one with its operator, and none keeps both (a repeated POST must
    /// not wipe out why the gateway is in maintenance).
    pub fn turn_on(&self, by: &AdminId, reason: &str) -> Option<MaintenanceState> {
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = match guard.as_ref().filter(|_| self.is_on()) {
            Some(old) if reason.is_empty() => old.clone(),
            Some(old) => MaintenanceState { by: by.clone(), since: old.since, reason: reason.to_owned() },
            None => MaintenanceState { by: by.clone(), since: OffsetDateTime::now_utc(), reason: reason.to_owned() },
        };
        *guard = Some(state.clone());
        self.on.store(true, Ordering::Release);
        Some(state)
    }

    /// Turns it off.
    pub fn turn_off(&self) {
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = None;
        self.on.store(false, Ordering::Release);
    }

    /// The state as the admin listener shows it.
    pub fn json(&self) -> serde_json::Value {
        match self.state() {
            Some(s) => json!({
                "maintenance": true,
                "by": s.by.to_string(),
                "since": s.since.format(&Rfc3339).unwrap_or_default(),
                "reason": s.reason,
            }),
            None => json!({ "maintenance": false }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maintenance_keeps_who_set_it_until_it_is_turned_off() {
        let m = Maintenance::default();
        assert!(!m.is_on());
        assert_eq!(m.json()["maintenance"], false);
        let budi: AdminId = "ID/PEMDA/1602/budi".parse().unwrap();
        m.turn_on(&budi, "CHG-7 kernel update");
        assert!(m.is_on());
        let state = m.state().unwrap();
        assert_eq!(state.by, budi);
        assert!(state.describe().contains("ID/PEMDA/1602/budi") && state.describe().contains("CHG-7"));
        assert_eq!(m.json()["by"], "ID/PEMDA/1602/budi");
        // On again without a reason: nothing changes, when it began included.
        let siti: AdminId = "ID/PEMDA/1602/siti".parse().unwrap();
        m.turn_on(&siti, "");
        assert_eq!(m.state().unwrap(), state);
        // With a new reason: the reason and its operator change, not when it began.
        m.turn_on(&siti, "CHG-8 disk swap");
        let again = m.state().unwrap();
        assert_eq!((again.by.clone(), again.reason.as_str(), again.since), (siti, "CHG-8 disk swap", state.since));
        m.turn_off();
        assert!(!m.is_on() && m.state().is_none());
    }
}
