//! Where a forward's time goes among the CPU kernels: with `DITAIL_KERNEL_TIMES=1` each
//! kernel call's wall time (kernels run one at a time, each on the whole thread pool) and
//! its multiply-adds are summed per kind, for `examples/bench` to print beside each
//! measurement. What the kinds do not cover is burn's own ops (norms, elementwise, copies).
//!
//! A flat `perf` profile could not say this: the GEMM microkernel is one symbol under
//! every kind, and the burn-op overheads that a kernel replaced showed at a fraction of
//! the time replacing them saved (GEGLU: 3.7% of the samples, 20% of the U-Net's time).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A kind of CPU kernel call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 3x3 stride-1 convolutions through Winograd.
    ConvWinograd,
    /// Other convolutions with a kernel wider than 1x1 (im2col tiles).
    ConvDirect,
    /// 1x1 convolutions.
    ConvPointwise,
    /// Linear layers.
    Linear,
    /// Attention (scores, softmax, values).
    Attention,
    /// GEGLU.
    Geglu,
    /// SiLU.
    Silu,
    /// GroupNorm (with SiLU where it follows).
    GroupNorm,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::ConvWinograd,
        Kind::ConvDirect,
        Kind::ConvPointwise,
        Kind::Linear,
        Kind::Attention,
        Kind::Geglu,
        Kind::Silu,
        Kind::GroupNorm,
    ];

    /// The name the report uses.
    pub fn name(self) -> &'static str {
        match self {
            Kind::ConvWinograd => "conv 3x3 winograd",
            Kind::ConvDirect => "conv direct",
            Kind::ConvPointwise => "conv 1x1",
            Kind::Linear => "linear",
            Kind::Attention => "attention",
            Kind::Geglu => "geglu",
            Kind::Silu => "silu",
            Kind::GroupNorm => "group norm",
        }
    }
}

/// Per kind: calls, nanoseconds, multiply-adds.
static TOTALS: [[AtomicU64; 3]; Kind::ALL.len()] =
    [const { [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)] }; Kind::ALL.len()];

/// Whether calls are timed (`DITAIL_KERNEL_TIMES=1`, read once).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| super::switches::env_is("DITAIL_KERNEL_TIMES", "1"))
}

/// Runs `f`, adding its wall time and `macs` multiply-adds to `kind` when timing is on.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) fn timed<T>(kind: Kind, macs: usize, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let at = &TOTALS[kind as usize];
    at[0].fetch_add(1, Ordering::Relaxed);
    at[1].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    at[2].fetch_add(macs as u64, Ordering::Relaxed);
    out
}

/// One kind's totals since the last [`take`].
#[derive(Clone, Copy, Debug)]
pub struct KernelTime {
    /// The kind.
    pub kind: Kind,
    /// Calls.
    pub calls: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Multiply-adds of the direct algorithm (Winograd's count as the convolution's).
    pub macs: u64,
}

/// The totals of every kind that ran since the last call, which resets them.
pub fn take() -> Vec<KernelTime> {
    Kind::ALL
        .iter()
        .map(|&kind| {
            let at = &TOTALS[kind as usize];
            KernelTime {
                kind,
                calls: at[0].swap(0, Ordering::Relaxed),
                seconds: at[1].swap(0, Ordering::Relaxed) as f64 * 1e-9,
                macs: at[2].swap(0, Ordering::Relaxed),
            }
        })
        .filter(|t| t.calls > 0)
        .collect()
}
