//! What the benchmark examples share: the process's memory figures from `/proc/self`, and
//! timing a measurement.

#![allow(dead_code)]

/// A `/proc/self/status` field in bytes (`VmHWM`, `VmRSS`, `RssAnon`, `RssFile`); `None`
/// where there is no such file (not Linux).
pub fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident memory since the last [`reset_peak_rss`], in bytes (0 where unknown).
pub fn peak_rss() -> u64 {
    status_bytes("VmHWM").unwrap_or(0)
}

/// Resident memory now, in bytes (0 where unknown).
pub fn current_rss() -> u64 {
    status_bytes("VmRSS").unwrap_or(0)
}

/// Resets the peak ([`peak_rss`]) to the current resident memory (Linux; else nothing).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Runs `f` once to warm up, then `runs` times timed: the median and every time in seconds,
/// and the peak resident memory over all of them.
pub fn measure(
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, Vec<f64>, u64)> {
    reset_peak_rss();
    f()?;
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let t = std::time::Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64());
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok((sorted[sorted.len() / 2], times, peak_rss()))
}
