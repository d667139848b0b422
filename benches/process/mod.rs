//! What the process-level benches share (`live`, `relay`): one pod's lifetime as a sample,
//! timed from its first accepted event to a caller's "done", with its CPU seconds.

#![allow(dead_code)] // each bench uses a part

use guild_gateway_dev::simulate::cpu_seconds;
use guild_gateway_dev::testing::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// One run of a pod over a whole stream.
pub struct Sample {
    pub events: u64,
    pub seconds: f64,
    pub cpu_seconds: f64,
}

impl Sample {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    /// The pod's CPU seconds per 100k events.
    pub fn cpu_per_100k(&self) -> f64 {
        self.cpu_seconds * 100_000.0 / self.events as f64
    }
}

pub fn status(port: u16) -> Option<Value> {
    let (code, body) = http_get(port, "/status").ok()?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Polls the pod until `done` says it has finished; times from its first event.
pub fn measure(pod: &Proc, port: u16, done: impl Fn(&Value) -> bool) -> Sample {
    wait_for(Duration::from_secs(60), || {
        status(port).filter(|s| s["events_accepted"].as_u64() > Some(0))
    })
    .expect("the pod takes events");
    let started = Instant::now();
    let last = wait_for(Duration::from_secs(600), || {
        status(port).filter(|s| done(s))
    })
    .expect("the pod finishes");
    let seconds = started.elapsed().as_secs_f64();
    let events = last["events_done"].as_u64().unwrap_or(0);
    Sample {
        events,
        seconds,
        cpu_seconds: cpu_seconds(pod.0.id()),
    }
}

/// Whether a serving pod (its `/status` `s`) committed everything the fake Discord on
/// `fake_port` sent its session, and the session is done.
pub fn committed_all_sent(fake_port: u16, s: &Value) -> bool {
    let Some((_, body)) = http_get(fake_port, "/fake/sessions").ok() else {
        return false;
    };
    let sessions: Value = serde_json::from_str(&body).unwrap_or_default();
    sessions.as_array().is_some_and(|all| {
        all.iter().any(|session| {
            session["session_id"] == s["session_id"]
                && session["done"] == true
                && session["last_seq_sent"] == s["last_seq_committed"]
                && s["in_flight"] == 0
        })
    })
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A number from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `cargo bench` passes `--bench`; a filter that names another bench skips this one.
pub fn filtered_out(name: &str) -> bool {
    std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !name.contains(&a))
}
