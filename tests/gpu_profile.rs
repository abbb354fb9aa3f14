//! `gpu::profile_dispatches`, what `examples/gpu_counts.rs --profile` reports on a GPU:
//! every launch is counted and timed, and the time lands on the kernel that took it. On
//! lavapipe (which has Vulkan timestamp queries) the times are the CPU's, but a large
//! matrix product against a tiny addition still tells whether they are attributed right.
//!
//! One test in its own binary: the launch observer is process-wide, and another test's
//! kernels running meanwhile would be counted in.

mod common;

use burn::prelude::*;
use burn::tensor::Distribution;
use ditail::models::gpu::{Dispatches, count_dispatches, profile_dispatches};

/// Runs `work` once to warm up (autotune, compilation), then profiles and counts it.
fn measure(device: &Device, work: impl Fn()) -> (Dispatches, Dispatches) {
    work();
    let ((), timed) = profile_dispatches(device, &work);
    let ((), counted) = count_dispatches(device, &work);
    (timed, counted)
}

#[test]
fn profiling_times_every_launch_on_the_kernel_that_took_it() {
    let device = common::wgpu_device();
    let a = Tensor::<2>::random([512, 512], Distribution::Normal(0.0, 1.0), &device);
    let b = Tensor::<2>::random([512, 512], Distribution::Normal(0.0, 1.0), &device);
    let small = Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0], &device);

    let (product, product_counted) = measure(&device, || {
        a.clone().matmul(b.clone()).into_data();
    });
    let (sum, _) = measure(&device, || {
        (small.clone() + 1.0).into_data();
    });

    for (what, d) in [("product", &product), ("sum", &sum)] {
        let t = d
            .times
            .as_ref()
            .expect("profile_dispatches times the launches");
        assert!(d.total > 0, "{what}: no launch observed");
        assert_eq!(t.measured + t.unmeasured, d.total, "{what}: {d:?}");
        assert!(t.measured > 0, "{what}: nothing measured: {d:?}");
        for name in t.by_kernel.keys() {
            assert!(
                d.by_kernel.contains_key(name),
                "{what}: {name} timed, not counted"
            );
        }
        assert!(t.busy() > std::time::Duration::ZERO, "{what}: {d:?}");
        if t.device_clock {
            // One queue: the kernels run one after another inside the span.
            let slack = std::time::Duration::from_micros(50);
            assert!(
                t.busy() <= t.span + slack,
                "{what}: busy beyond the span: {t:?}"
            );
        }
    }
    // Counting alone times nothing and counts the same launches.
    assert!(product_counted.times.is_none());
    assert_eq!(product_counted.by_kernel, product.by_kernel);

    // 134M multiply-adds against four additions: the product's time is on its kernels.
    let busy = |d: &Dispatches| d.times.as_ref().unwrap().busy();
    assert!(
        busy(&product) > 20 * busy(&sum),
        "product {:?} against sum {:?}: {product:?} {sum:?}",
        busy(&product),
        busy(&sum)
    );
    let times = &product.times.as_ref().unwrap().by_kernel;
    let (slowest, _) = times.iter().max_by_key(|(_, t)| **t).unwrap();
    assert!(
        slowest.to_lowercase().contains("matmul"),
        "the product's time is not on a matmul kernel: {times:?}"
    );
}
