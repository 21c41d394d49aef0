//! The GPU code path on burn's wgpu backend (feature `wgpu`): the CubeCL kernels CUDA runs,
//! compiled for Vulkan. On a machine without a GPU, Mesa's software Vulkan driver (lavapipe) runs
//! them, so CI exercises them (issue 20, point 4): every parity fixture within 1e-4 on `wgpu:0`
//! (the backbone forward that `embed` runs), training iterations that end where the same
//! iterations on the CPU backend end, and two replicas of half batches on the wgpu device that
//! train as one of the whole batch.
//!
//! Kernels are tuned at their minimal level (`CUBECL_AUTOTUNE_LEVEL=minimal`): on a software
//! driver, tuning every kernel at its first use costs minutes and changes no result.
//!
//! `cargo test -p dinoadapt-devtools --features wgpu --test wgpu` (with a Vulkan driver: Debian
//! `mesa-vulkan-drivers`).
#![cfg(feature = "wgpu")]

mod common;
#[path = "../../core/tests/common/multicrop.rs"]
mod multicrop;

use common::{dinoadapt_dev, fixtures, p};

use std::collections::HashMap;

use burn::backend::wgpu::{CubeBackend, Wgpu, WgpuDevice, WgpuRuntime};
use burn::backend::{Autodiff, Flex};
use dinoadapt_core::checkpoint::HostTensor;
use dinoadapt_core::train::param_paths::snapshot;
use dinoadapt_core::train::{OptimConfig, SslLossConfig, Trainer};
use multicrop::{relative, student, train, worst_weight, IMAGES};

type Cpu = Autodiff<Flex>;
type Gpu = Autodiff<Wgpu>;
/// The wgpu backend without burn's fusion: two replicas on the one device of a machine without
/// a GPU run on it, since through fusion a tensor that two threads share fails ("Should have
/// handle for tensor", burn-ir 0.21); replicas on separate GPUs are separate devices.
type Plain = CubeBackend<WgpuRuntime, f32, i32, u32>;

/// Minimal kernel tuning, for this process and the programs it starts.
fn minimal_tuning() {
    std::env::set_var("CUBECL_AUTOTUNE_LEVEL", "minimal");
}

const STEPS: usize = 4;

fn loss() -> SslLossConfig {
    SslLossConfig {
        koleo_weight: 0.0,
        ..SslLossConfig::default()
    }
}

/// The start weights, drawn on the CPU, by name.
fn start() -> HashMap<String, HostTensor> {
    snapshot::<Cpu, _>(&student::<Cpu>(11, None, &Default::default()))
        .into_iter()
        .collect()
}

#[test]
fn every_backbone_fixture_matches_its_reference_on_wgpu() {
    let Some(fixtures) = fixtures() else { return };
    minimal_tuning();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("parity.json");
    let out = dinoadapt_dev(&[
        "parity",
        "--fixtures",
        p(&fixtures),
        "--device",
        "wgpu",
        "--json",
        p(&report),
    ]);
    assert!(out.status.success());
    let reports: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let reports = reports.as_array().unwrap();
    assert!(reports.len() >= 8, "{} fixture files", reports.len());
    let worst = reports
        .iter()
        .map(|r| r["worst"].as_f64().unwrap())
        .fold(0.0, f64::max);
    eprintln!(
        "wgpu parity: {} files, worst |err| {worst:.3e}",
        reports.len()
    );
    for r in reports {
        assert!(r["passed"].as_bool().unwrap(), "{r}");
    }
    assert!(worst <= 1e-4);
}

#[test]
fn training_iterations_on_wgpu_end_where_the_cpu_backend_ends() {
    minimal_tuning();
    let weights = start();
    let cpu = Trainer::new(
        student::<Cpu>(0, Some(&weights), &Default::default()),
        loss(),
        OptimConfig::default(),
    );
    let (cpu_reports, cpu_weights) = train(cpu, STEPS, 1, 0, IMAGES);
    let device = WgpuDevice::DefaultDevice;
    let gpu = Trainer::new(
        student::<Gpu>(0, Some(&weights), &device),
        loss(),
        OptimConfig::default(),
    );
    let (gpu_reports, gpu_weights) = train(gpu, STEPS, 1, 0, IMAGES);
    let mut worst_loss: f64 = 0.0;
    for (step, (c, g)) in cpu_reports.iter().zip(&gpu_reports).enumerate() {
        for (name, v) in c.loss.terms.iter() {
            let got = g.loss.terms.value(name);
            let r = relative(v, got);
            worst_loss = worst_loss.max(r);
            assert!(r <= 1e-4, "iteration {step}, {name}: CPU {v}, wgpu {got}");
        }
    }
    let worst = worst_weight(&cpu_weights, &gpu_weights);
    eprintln!(
        "wgpu vs CPU, {STEPS} iterations: worst relative loss difference {worst_loss:.2e}, worst \
         weight difference {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(worst.0 <= 1e-4, "{} differs by {:e}", worst.1, worst.0);
}

#[test]
fn two_wgpu_replicas_train_as_one() {
    use std::sync::Arc;

    use dinoadapt_core::train::replicas::collective::CollectivePeer;

    minimal_tuning();
    let weights = Arc::new(start());
    let device = WgpuDevice::DefaultDevice;
    let one = Trainer::new(
        student::<Autodiff<Plain>>(0, Some(&weights), &device),
        loss(),
        OptimConfig::default(),
    );
    let (reports, reference) = train(one, STEPS, 1, 0, IMAGES);
    let world = 2;
    let threads: Vec<_> = (0..world)
        .map(|rank| {
            let weights = weights.clone();
            std::thread::spawn(move || {
                let device = WgpuDevice::DefaultDevice;
                let peer = CollectivePeer::register::<Plain>(rank, world, &device).unwrap();
                let mut t = Trainer::new(
                    student::<Autodiff<Plain>>(0, Some(&weights), &device),
                    loss(),
                    OptimConfig::default(),
                );
                t.replicas = Some(Arc::new(peer));
                let count = IMAGES / world;
                let out = train(t, STEPS, 1, rank * count, count);
                peer.finish::<Plain>().unwrap();
                out
            })
        })
        .collect();
    let outs: Vec<_> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    let mut worst_loss: f64 = 0.0;
    for (one, two) in reports.iter().zip(&outs[0].0) {
        worst_loss = worst_loss.max(relative(one.loss.total, two.loss.total));
    }
    let worst = worst_weight(&reference, &outs[0].1);
    eprintln!(
        "two wgpu replicas vs one, {STEPS} iterations: worst relative loss difference \
         {worst_loss:.2e}, worst weight difference {:.2e} ({})",
        worst.0, worst.1
    );
    // The replicas apply the same averaged gradients; the GPU's reductions (the clipping norm)
    // are not bitwise deterministic, so they may differ in the last bits.
    let apart = worst_weight(&outs[0].1, &outs[1].1);
    assert!(
        apart.0 <= 1e-6,
        "the replicas drift apart: {} by {:e}",
        apart.1,
        apart.0
    );
    assert!(worst_loss <= 1e-5, "loss {worst_loss:e}");
    assert!(worst.0 <= 1e-5, "{} differs by {:e}", worst.1, worst.0);
}
