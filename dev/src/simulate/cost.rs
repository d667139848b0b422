//! What a rescale costs the pods: their CPU time and file sizes sampled each round, and the
//! difference over a rescale against their steady rates before it.

use super::fleet::{cpu_seconds, Pod};
use std::path::Path;
use std::time::{Duration, Instant};

/// Every pod's CPU seconds and database bytes (with WAL and working files), summed, as of
/// the last sample; pods stopped keep their last figures.
#[derive(Default)]
pub(super) struct Usage {
    at: Option<Instant>,
    cpu: f64,
    pub(super) disk: u64,
    per_pod: std::collections::BTreeMap<u32, (f64, u64)>,
    /// (when, total CPU seconds, total bytes), the last 10 s: the steady rates before a rescale.
    history: std::collections::VecDeque<(Instant, f64, u64)>,
}

impl Usage {
    pub(super) fn sample(&mut self, pods: &[Pod]) {
        let now = Instant::now();
        for pod in pods.iter().filter(|p| !p.stopped) {
            let dir = pod.database.parent().unwrap_or(Path::new("."));
            let prefix = pod
                .database
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // The database, its WAL, and a rescale's export and import files beside it.
            let disk = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum();
            self.per_pod
                .insert(pod.ordinal, (cpu_seconds(pod.child.id()), disk));
        }
        self.cpu = self.per_pod.values().map(|(c, _)| c).sum();
        self.disk = self.per_pod.values().map(|(_, d)| d).sum();
        self.at = Some(now);
        self.history.push_back((now, self.cpu, self.disk));
        while self
            .history
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > Duration::from_secs(10))
        {
            self.history.pop_front();
        }
    }

    /// CPU seconds and bytes per second over the sampled history.
    fn rates(&self) -> (f64, f64) {
        match (self.history.front(), self.history.back()) {
            (Some((t0, c0, d0)), Some((t1, c1, d1))) if t1 > t0 => {
                let secs = (*t1 - *t0).as_secs_f64();
                ((c1 - c0) / secs, (*d1 as f64 - *d0 as f64) / secs)
            }
            _ => (0.0, 0.0),
        }
    }
}

/// The pods' usage while one rescale runs.
pub(super) struct Window {
    started: Instant,
    cpu: f64,
    rate_before: f64,
    disk_rate_before: f64,
    disk_before: u64,
    pub(super) disk_peak: u64,
}

/// What a rescale cost the pods, from its start to its commit.
#[derive(serde::Serialize, Clone, Copy)]
pub(super) struct Cost {
    pub(super) cpu_seconds: f64,
    /// The CPU the pods would have used meanwhile at their rate of the 10 s before.
    pub(super) cpu_seconds_at_rate_before: f64,
    pub(super) disk_bytes_before: u64,
    pub(super) disk_bytes_peak: u64,
    pub(super) disk_bytes_after: u64,
    /// What the files would have grown by meanwhile at their rate of the 10 s before.
    pub(super) disk_bytes_growth_at_rate_before: u64,
}

impl Window {
    pub(super) fn open(usage: &Usage) -> Window {
        let (rate_before, disk_rate_before) = usage.rates();
        Window {
            started: usage.at.unwrap_or_else(Instant::now),
            cpu: usage.cpu,
            rate_before,
            disk_rate_before,
            disk_before: usage.disk,
            disk_peak: usage.disk,
        }
    }

    pub(super) fn cost(&self, usage: &Usage) -> Cost {
        let elapsed = usage.at.map_or(0.0, |at| {
            at.saturating_duration_since(self.started).as_secs_f64()
        });
        Cost {
            cpu_seconds: usage.cpu - self.cpu,
            cpu_seconds_at_rate_before: self.rate_before * elapsed,
            disk_bytes_before: self.disk_before,
            disk_bytes_peak: self.disk_peak.max(usage.disk),
            disk_bytes_after: usage.disk,
            disk_bytes_growth_at_rate_before: (self.disk_rate_before.max(0.0) * elapsed) as u64,
        }
    }
}
