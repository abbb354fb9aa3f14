//! What some GPU work cost the device: the kernels it launched, by name, the memory its
//! pools held after it and, when asked, each kernel's time on the device.
//!
//! Counts are the same on any adapter for one build, shapes and tuning choice, so they are
//! taken on lavapipe where no GPU is lent. Times are the GPU's own (timestamp queries on
//! wgpu, events on CUDA) and only mean something on a GPU; they are what says where a run
//! goes (which kernels, and how long the device sits idle between them waiting for the
//! host) when a GPU is lent for a few minutes.
//!
//! Both come from cubecl's launch observer, which is called on the thread that issues each
//! launch. Timing asks it for *deferred* measurements: each kernel is bracketed by two
//! timestamps that nobody waits for, so the kernels still run back to back, and the
//! measurements are read once the work is over.
//!
//! Pinned source: cubecl-runtime 0.11.3 `logging/observer.rs` (`LaunchObserver`,
//! `TimingRequest::Deferred`), cubecl-wgpu 0.11.3 `compute/timings.rs` (timestamps mapped
//! onto the host's clock, a window without them is no measurement).

use std::collections::BTreeMap;
use std::time::Duration;

/// The kernel dispatches some GPU work issued and the device memory its pools held after it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dispatches {
    /// Kernels launched (issued to the device), autotune's benchmark runs included.
    pub total: usize,
    /// Launches per kernel name (cubecl's names, generics shortened).
    pub by_kernel: BTreeMap<String, usize>,
    /// Bytes the device's memory pools held after the work (what the work made the
    /// allocator reserve, the weights and other live tensors included).
    pub reserved_bytes: u64,
    /// Bytes of live tensors after the work.
    pub in_use_bytes: u64,
    /// The kernels' times, where they were asked for ([`profile_dispatches`]).
    pub times: Option<KernelTimes>,
}

/// The device time of the kernels some work launched.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelTimes {
    /// Summed time per kernel name (the names of [`Dispatches::by_kernel`]).
    pub by_kernel: BTreeMap<String, Duration>,
    /// Launches that were timed.
    pub measured: usize,
    /// Launches whose measurement came back empty (a window with no timestamp in it, or
    /// wgpu's timestamp queries used up): left out of the sums, not counted as zero.
    pub unmeasured: usize,
    /// Whether the times are the device's timestamps (`true`) or host time around a
    /// blocking submit (`false`: a backend without timestamps; such a time includes the
    /// submission and the wait, and the kernels did not run back to back).
    pub device_clock: bool,
    /// From the first measured kernel's start to the last one's end: the device's time for
    /// the whole work. Minus [`KernelTimes::busy`], the time it sat idle between kernels.
    pub span: Duration,
}

impl KernelTimes {
    /// The kernels' summed time.
    pub fn busy(&self) -> Duration {
        self.by_kernel.values().sum()
    }

    /// The share of [`KernelTimes::span`] the device spent between kernels (launch and
    /// host overhead), 0 to 1.
    pub fn idle_share(&self) -> f64 {
        let span = self.span.as_secs_f64();
        match span > 0.0 {
            true => (1.0 - self.busy().as_secs_f64() / span).max(0.0),
            false => 0.0,
        }
    }
}

/// Runs `work` and counts the kernels it launched on any cubecl device (every GPU backend);
/// `work` must read its results back, or under fusion part of it may still be queued.
/// Observation is process-wide: other threads' launches meanwhile are counted too.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn count_dispatches<R>(
    device: &burn::prelude::Device,
    work: impl FnOnce() -> R,
) -> (R, Dispatches) {
    observe(device, false, work)
}

/// [`count_dispatches`], and each kernel's time on the device ([`Dispatches::times`]).
/// Timing costs the host a little per launch (two timestamp writes), not the kernels'
/// overlap; the measurements are read after `work` returns.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn profile_dispatches<R>(
    device: &burn::prelude::Device,
    work: impl FnOnce() -> R,
) -> (R, Dispatches) {
    observe(device, true, work)
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn observe<R>(
    device: &burn::prelude::Device,
    timed: bool,
    work: impl FnOnce() -> R,
) -> (R, Dispatches) {
    use std::sync::{Arc, Mutex};

    use cubecl::MemoryScope;
    use cubecl::logging::{
        LaunchObservation, LaunchObserver, ProfileDuration, TimingMethod, TimingRequest,
    };

    /// A measurement as it came: unread (deferred) or already read (when cubecl's own
    /// profiling logger is on, it reads each one and hands the length on).
    enum Measure {
        Unread(ProfileDuration),
        Read(Duration, TimingMethod),
    }

    #[derive(Default)]
    struct Observer {
        timed: bool,
        counts: Mutex<BTreeMap<&'static str, usize>>,
        measures: Mutex<Vec<(&'static str, Measure)>>,
    }
    impl Observer {
        fn keep(&self, kernel: &'static str, m: Measure) {
            let mut v = self.measures.lock().unwrap_or_else(|e| e.into_inner());
            v.push((kernel, m));
        }
    }
    impl LaunchObserver for Observer {
        fn launched(&self, kernel: &'static str) {
            let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            *map.entry(kernel).or_default() += 1;
        }
        fn timing(&self) -> TimingRequest {
            match self.timed {
                true => TimingRequest::Deferred,
                false => TimingRequest::None,
            }
        }
        fn profiled(&self, kernel: &'static str, profile: ProfileDuration) {
            self.keep(kernel, Measure::Unread(profile));
        }
        fn timed(&self, kernel: &'static str, duration: Duration, method: TimingMethod) {
            self.keep(kernel, Measure::Read(duration, method));
        }
    }

    let observer = Arc::new(Observer {
        timed,
        ..Observer::default()
    });
    // Before the work: device timestamps are mapped onto the host's clock, so every
    // kernel's start is after this (less a little drift, which the second allows for).
    let epoch = std::time::Instant::now();
    let epoch = epoch.checked_sub(Duration::from_secs(1)).unwrap_or(epoch);
    let watching = LaunchObservation::new(observer.clone());
    let result = work();
    drop(watching);

    let counts = observer.counts.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = Dispatches {
        total: counts.values().sum(),
        ..Dispatches::default()
    };
    for (name, n) in counts.iter() {
        *out.by_kernel.entry(short_name(name)).or_default() += n;
    }
    if timed {
        let measures =
            std::mem::take(&mut *observer.measures.lock().unwrap_or_else(|e| e.into_inner()));
        let mut times = KernelTimes {
            device_clock: true,
            ..KernelTimes::default()
        };
        let (mut first, mut last) = (None::<Duration>, None::<Duration>);
        for (name, m) in measures {
            let (duration, method) = match m {
                Measure::Read(d, method) => (Some(d), method),
                Measure::Unread(p) => {
                    let method = p.timing_method();
                    let ticks = futures_lite::future::block_on(p.resolve());
                    if let Some(t) = &ticks {
                        let (s, e) = (t.start_duration_since(epoch), t.end_duration_since(epoch));
                        first = Some(first.map_or(s, |f| f.min(s)));
                        last = Some(last.map_or(e, |l| l.max(e)));
                    }
                    (ticks.map(|t| t.duration()), method)
                }
            };
            times.device_clock &= method == TimingMethod::Device;
            match duration {
                Some(d) => {
                    times.measured += 1;
                    *times.by_kernel.entry(short_name(name)).or_default() += d;
                }
                None => times.unmeasured += 1,
            }
        }
        times.span = match (first, last) {
            (Some(f), Some(l)) => l.saturating_sub(f),
            // Read by cubecl's logger one at a time: no timeline, the kernels back to back.
            _ => times.busy(),
        };
        out.times = Some(times);
    }
    if let Some(client) = super::cube_client(device) {
        let usage = client.memory_report(MemoryScope::Device).usage();
        out.reserved_bytes = usage.bytes_reserved;
        out.in_use_bytes = usage.bytes_in_use;
    }
    (result, out)
}

/// A kernel's type name without module paths or generic arguments.
fn short_name(name: &str) -> String {
    let base = name.split('<').next().unwrap_or(name);
    base.rsplit("::").next().unwrap_or(base).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_are_shortened() {
        assert_eq!(
            short_name("burn_cubecl::kernel::matmul::Tiled<f16, 4>"),
            "Tiled"
        );
        assert_eq!(short_name("fused_elemwise"), "fused_elemwise");
    }

    #[test]
    fn idle_share_is_the_span_the_kernels_leave() {
        let mut t = KernelTimes {
            span: Duration::from_millis(10),
            ..KernelTimes::default()
        };
        t.by_kernel.insert("a".into(), Duration::from_millis(3));
        t.by_kernel.insert("b".into(), Duration::from_millis(5));
        assert_eq!(t.busy(), Duration::from_millis(8));
        assert!((t.idle_share() - 0.2).abs() < 1e-12, "{}", t.idle_share());
        t.span = Duration::ZERO;
        assert_eq!(t.idle_share(), 0.0);
    }
}
