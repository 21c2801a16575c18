//! What the benchmarks share: the real input, and CPU and load figures read from /proc.

#![allow(dead_code)]

use serde_json::Value;

/// The records of `testdata/github-webhooks.ndjson`, one JSON object each.
pub(crate) fn payloads() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../testdata/github-webhooks.ndjson"
    );
    std::fs::read_to_string(path)
        .expect("testdata")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

/// CPU seconds this process has used (user and system).
pub(crate) fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after_name = &stat[stat.rfind(')').expect("stat") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the line, 12 and 13 after the command name.
    let ticks = |i: usize| fields[i].parse::<f64>().expect("cpu ticks");
    (ticks(11) + ticks(12)) / 100.0
}

/// Busy CPU seconds of the whole machine (every process, every core).
pub(crate) fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .expect("cpu line")
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().expect("ticks"))
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    (ticks.iter().take(8).sum::<f64>() - ticks[3] - ticks[4]) / 100.0
}

/// The 1-minute load average: other work on the machine skews every figure.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
