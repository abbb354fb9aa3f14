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

/// Seconds the hypervisor has taken from this machine's CPUs so far, summed over them
/// (`steal` in `/proc/stat`, in the kernel's 100 Hz ticks); `None` where unknown.
fn stolen_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: f64 = stat
        .lines()
        .next()?
        .split_whitespace()
        .nth(8)?
        .parse()
        .ok()?;
    Some(ticks / 100.0)
}

/// Runs `f` once to warm up, then `runs` times timed: the median and every time in seconds,
/// and the peak resident memory over all of them. The CPU kernels' per-kind times
/// (`ditail::models::kernels::timing`) are reset after the warm-up.
///
/// On a virtual machine whose host takes cycles (`steal`), the share taken during the timed
/// runs goes to stderr, with each run's time less its stolen share: A/B comparisons of
/// builds on such a machine read those (the wall times moved by 30% from minute to minute
/// on the development VM).
pub fn measure(
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, Vec<f64>, u64)> {
    reset_peak_rss();
    let warm = std::time::Instant::now();
    f()?;
    // On a GPU the first run compiles each kernel and, with a fresh tuning cache, autotunes
    // each new shape: this minus a timed run is what a user's first run costs extra.
    eprintln!("  warm-up run: {:.2} s", warm.elapsed().as_secs_f64());
    // The kernels' times (`DITAIL_KERNEL_TIMES=1`) count the timed runs only.
    ditail::models::kernels::timing::take();
    let mut times = Vec::new();
    let mut unstolen = Vec::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for _ in 0..runs.max(1) {
        let stolen = stolen_seconds();
        let t = std::time::Instant::now();
        f()?;
        let time = t.elapsed().as_secs_f64();
        times.push(time);
        if let (Some(a), Some(b)) = (stolen, stolen_seconds()) {
            unstolen.push((time, (b - a) / cpus));
        }
    }
    let stolen: f64 = unstolen.iter().map(|(_, s)| s).sum();
    if stolen > 0.0 {
        let total: f64 = unstolen.iter().map(|(t, _)| t).sum();
        let less: Vec<f64> = unstolen
            .iter()
            .map(|(t, s)| ((t - s) * 1000.0).round() / 1000.0)
            .collect();
        eprintln!(
            "  the host stole {:.1}% of the CPUs during these runs; less that: {less:?} s",
            100.0 * stolen / total
        );
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    Ok((sorted[sorted.len() / 2], times, peak_rss()))
}
