//! The free space of the audit log's filesystem. A full disk fails the log closed, and then every
//! exchange is refused, so the gateway watches it: measured when the log opens and every
//! [`EVERY`] after on a thread of its own, shown in metrics (`splpd_audit_disk_free_bytes`,
//! `splpd_audit_disk_size_bytes`) and on the dashboard, and warned of when less than a tenth is
//! left, or less than a few times the room the log sets aside at once (as it gets there, then
//! hourly while it lasts): in time to give it more space, or to export the log so that
//! retention, where configured, may delete its oldest segments.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::ticker::Ticker;
use crate::config::units::ByteSize;

/// How often the space is measured.
pub const EVERY: Duration = Duration::from_secs(10);

/// Below this share of the filesystem left free, in percent, the operator is warned.
pub const LOW_PERCENT: u64 = 10;

/// Once warned, space is said to be back only at this share free: a disk that hovers about
/// [`LOW_PERCENT`] is not told of at every measure.
const BACK_PERCENT: u64 = 12;

/// How often the warning is repeated while space stays low.
const WARN_AGAIN: Duration = Duration::from_secs(3600);

/// The space of a filesystem: what an unprivileged writer may still use, and the whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes free for the gateway to write (blocks kept for root not counted).
    pub free: u64,
    /// Bytes in the filesystem.
    pub size: u64,
}

impl DiskSpace {
    /// The space of the filesystem that holds `dir`.
    pub fn of(dir: &Path) -> io::Result<Self> {
        let fs = rustix::fs::statvfs(dir)?;
        Ok(Self { free: fs.f_bavail.saturating_mul(fs.f_frsize), size: fs.f_blocks.saturating_mul(fs.f_frsize) })
    }

    /// Whether less than [`LOW_PERCENT`] of it is free.
    pub fn is_low(&self) -> bool {
        self.size > 0 && u128::from(self.free) * 100 < u128::from(self.size) * u128::from(LOW_PERCENT)
    }

    /// The measure as people read it: "17.1 GiB free of 251.9 GiB (6%)".
    pub fn describe(&self) -> String {
        self.describe_as("free of")
    }

    /// The same in another language, `free_of` its words for "free of" ("kosong dari").
    pub fn describe_as(&self, free_of: &str) -> String {
        format!(
            "{} {free_of} {} ({}%)",
            ByteSize(self.free).approx(),
            ByteSize(self.size).approx(),
            self.percent_free()
        )
    }

    /// The free share, in whole percent.
    pub fn percent_free(&self) -> u64 {
        if self.size == 0 {
            0
        } else {
            u64::try_from(u128::from(self.free) * 100 / u128::from(self.size)).unwrap_or(100)
        }
    }
}

/// The latest measure, shared with the metrics.
#[derive(Debug, Default)]
pub struct SpaceGauge {
    free: AtomicU64,
    /// 0 until measured.
    size: AtomicU64,
}

impl SpaceGauge {
    /// The latest measure, once there is one.
    pub fn get(&self) -> Option<DiskSpace> {
        let size = self.size.load(Ordering::Relaxed);
        (size > 0).then(|| DiskSpace { free: self.free.load(Ordering::Relaxed), size })
    }

    fn set(&self, space: DiskSpace) {
        self.free.store(space.free, Ordering::Relaxed);
        self.size.store(space.size, Ordering::Relaxed);
    }
}

/// The log's room needs, which say when its space is low and what the operator can do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Needs {
    /// What the log sets aside at a time (`[audit] preallocate`): with less free, the next
    /// setting aside fails, and the log with it, whatever share of the disk is left.
    pub preallocate: u64,
    /// Whether retention is configured, so that exports let it free space.
    pub retention: bool,
}

/// Below this many times [`Needs::preallocate`] free, space is low whatever its share: on a
/// small filesystem a tenth is less than the log needs to go on.
const PREALLOCATIONS_LEFT: u64 = 4;

/// What the operator has been told of the space, so that it is told on a change and then hourly,
/// not at every measure.
#[derive(Debug, Default)]
struct Teller {
    /// When space was last said to be low, while it still is.
    warned: Option<Instant>,
    needs: Needs,
}

/// What to tell the operator after one measure.
#[derive(Debug, PartialEq, Eq)]
enum Tell {
    Low(String),
    Back(String),
}

impl Teller {
    fn measured(&mut self, dir: &Path, space: DiskSpace, now: Instant) -> Option<Tell> {
        let told = space.describe();
        let reserve = self.needs.preallocate.saturating_mul(PREALLOCATIONS_LEFT);
        if space.is_low() || (space.size > 0 && space.free < reserve) {
            if self.warned.is_some_and(|at| now.duration_since(at) < WARN_AGAIN) {
                return None;
            }
            self.warned = Some(now);
            // Full already: exchanges are being refused now, not once it fills.
            let when = if space.free == 0 {
                "it is full, so".to_owned()
            } else if space.free < self.needs.preallocate {
                format!(
                    "it has less than the {} the log sets aside at a time ([audit] preallocate), so",
                    ByteSize(self.needs.preallocate).approx()
                )
            } else {
                "once it is full".to_owned()
            };
            let what_to_do = if self.needs.retention {
                "give it more space, or export the log (splpd audit export) so that retention can delete its oldest \
                 exported segments"
            } else {
                "give it more space (no retention is configured, so nothing is removed by itself: set [audit] \
                 retain_for or retain_size, and export the log with splpd audit export, for exported segments past \
                 it to be removed)"
            };
            return Some(Tell::Low(format!(
                "the audit log's filesystem ({}) has {told}: {when} every exchange is refused \
                 (Server.AuditUnavailable); {what_to_do}",
                dir.display()
            )));
        }
        if self.warned.is_none() || space.percent_free() < BACK_PERCENT || space.free < reserve {
            return None;
        }
        self.warned = None;
        Some(Tell::Back(format!("the audit log's filesystem ({}) has {told} again", dir.display())))
    }
}

/// Measures the space of `dir`'s filesystem now into `gauge`, then every [`EVERY`] on its own
/// thread until the ticker is dropped.
pub(crate) fn start_task(dir: PathBuf, gauge: Arc<SpaceGauge>, needs: Needs) -> io::Result<Ticker> {
    let mut teller = Teller { warned: None, needs };
    let mut measure = move || match DiskSpace::of(&dir) {
        Ok(space) => {
            gauge.set(space);
            match teller.measured(&dir, space, Instant::now()) {
                Some(Tell::Low(message)) => tracing::warn!("{message}"),
                Some(Tell::Back(message)) => tracing::info!("{message}"),
                None => {}
            }
        }
        Err(e) => tracing::debug!("cannot measure the free space of {}: {e}", dir.display()),
    };
    measure();
    Ticker::start("splpd-audit-space", EVERY, measure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_directory_has_a_size_and_no_more_free_than_that() {
        let dir = tempfile::tempdir().unwrap();
        let space = DiskSpace::of(dir.path()).unwrap();
        assert!(space.size > 0 && space.free <= space.size, "{space:?}");
        let missing = DiskSpace::of(&dir.path().join("nowhere")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn low_is_under_a_tenth_free() {
        assert!(DiskSpace { free: 9, size: 100 }.is_low());
        assert!(!DiskSpace { free: 10, size: 100 }.is_low());
        assert!(!DiskSpace::default().is_low(), "not measured is not low");
        let huge = DiskSpace { free: 5 << 56, size: 100 << 56 };
        assert!(huge.is_low(), "no overflow on large filesystems");
        assert_eq!(huge.percent_free(), 5);
    }

    /// On a small filesystem a tenth free is less than the log needs: space is low below a few
    /// times what it sets aside at once, and the advice fits whether retention is configured.
    #[test]
    fn space_is_low_below_a_few_preallocations_and_the_advice_fits_the_retention() {
        let dir = Path::new("/var/lib/splpd/audit");
        let t0 = Instant::now();
        let needs = Needs { preallocate: 1 << 20, retention: false };
        let small = DiskSpace { free: 3 << 20, size: 8 << 20 };
        assert!(!small.is_low(), "37% free");
        let mut teller = Teller { warned: None, needs };
        let Some(Tell::Low(warning)) = teller.measured(dir, small, t0) else { panic!("3 MiB free of 1 MiB needs") };
        assert!(warning.contains("once it is full") && warning.contains("no retention is configured"), "{warning}");
        assert!(warning.contains("retain_for") && !warning.contains("so that retention can delete"), "{warning}");
        // Under one preallocation the log fails now, and says why with room left on the disk.
        let under = DiskSpace { free: 896 << 10, size: 8 << 20 };
        let mut teller = Teller { warned: None, needs: Needs { retention: true, ..needs } };
        let Some(Tell::Low(warning)) = teller.measured(dir, under, t0) else { panic!("under one preallocation") };
        assert!(warning.contains("less than the 1 MiB the log sets aside at a time"), "{warning}");
        assert!(warning.contains("so that retention can delete its oldest exported segments"), "{warning}");
        // Back only with room for it again.
        assert_eq!(teller.measured(dir, DiskSpace { free: 2 << 20, size: 8 << 20 }, t0 + EVERY), None);
        let back = teller.measured(dir, DiskSpace { free: 6 << 20, size: 8 << 20 }, t0 + EVERY * 2);
        assert!(matches!(back, Some(Tell::Back(_))), "{back:?}");
    }

    #[test]
    fn the_measure_is_said_in_the_readers_words() {
        let low = DiskSpace { free: 5 << 30, size: 100 << 30 };
        assert_eq!(low.describe(), "5 GiB free of 100 GiB (5%)");
        assert_eq!(low.describe_as("kosong dari"), "5 GiB kosong dari 100 GiB (5%)");
    }

    #[test]
    fn the_operator_is_told_as_space_runs_low_then_hourly_then_when_it_is_back() {
        let dir = Path::new("/var/lib/splpd/audit");
        let mut teller = Teller::default();
        let t0 = Instant::now();
        let plenty = DiskSpace { free: 50 << 30, size: 100 << 30 };
        let low = DiskSpace { free: 5 << 30, size: 100 << 30 };
        assert_eq!(teller.measured(dir, plenty, t0), None);
        let Some(Tell::Low(warning)) = teller.measured(dir, low, t0) else { panic!("low space is warned of") };
        assert!(
            warning.contains("/var/lib/splpd/audit")
                && warning.contains("5 GiB free of 100 GiB (5%): once it is full every exchange is refused")
                && warning.contains("splpd audit export"),
            "{warning}"
        );
        // Full already: said as what is happening, not what will.
        let Some(Tell::Low(full)) = Teller::default().measured(dir, DiskSpace { free: 0, size: 100 << 30 }, t0) else {
            panic!("a full disk is warned of")
        };
        assert!(full.contains("0 B free of 100 GiB (0%): it is full, so every exchange is refused"), "{full}");
        assert_eq!(teller.measured(dir, low, t0 + EVERY), None, "not at every measure");
        let hovering = DiskSpace { free: 11 << 30, size: 100 << 30 };
        assert_eq!(teller.measured(dir, hovering, t0 + EVERY * 2), None, "not back until 12% free");
        assert_eq!(teller.measured(dir, low, t0 + EVERY * 3), None, "nor low again");
        assert!(matches!(teller.measured(dir, low, t0 + WARN_AGAIN), Some(Tell::Low(_))), "again an hour on");
        let Some(Tell::Back(note)) = teller.measured(dir, plenty, t0 + WARN_AGAIN + EVERY) else {
            panic!("the operator hears that space is back")
        };
        assert!(note.contains("50 GiB free of 100 GiB (50%) again"), "{note}");
        assert_eq!(teller.measured(dir, plenty, t0 + WARN_AGAIN + EVERY * 2), None);
    }
}
