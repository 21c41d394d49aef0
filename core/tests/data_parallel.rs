//! Data parallelism with burn's collective operations (feature `collective`): two replicas, each
//! on its own thread with half of every batch, train exactly as one replica on the whole batch
//! (issue 20, point 3a). Masks, crops and stochastic depth are those of the whole batch: a
//! replica's shard is the global batch's rows of its images, and the stochastic depth draws are
//! keyed by image. KoLeo is off: it stays per replica, as in the official code, so with it the
//! two runs differ by design.
//!
//! `cargo test -p dinoadapt-core --features collective --test data_parallel`
#![cfg(feature = "collective")]

#[path = "common/multicrop.rs"]
mod multicrop;

use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use dinoadapt_core::train::param_paths::snapshot;
use dinoadapt_core::train::replicas::collective::CollectivePeer;
use dinoadapt_core::train::{Centering, OptimConfig, SslLossConfig, SslModel, StepReport, Trainer};
use multicrop::{relative, student, train, worst_weight, Weights, IMAGES};

type AB = Autodiff<Flex>;

const STEPS: usize = 4;

#[derive(Clone, Copy)]
struct Setup {
    centering: Centering,
    chunks: usize,
}

fn loss_config(setup: Setup) -> SslLossConfig {
    SslLossConfig {
        koleo_weight: 0.0,
        centering: setup.centering,
        ..SslLossConfig::default()
    }
}

fn one_replica(setup: Setup, start: &SslModel<AB>) -> (Vec<StepReport>, Weights) {
    let t = Trainer::new(start.clone(), loss_config(setup), OptimConfig::default());
    train(t, STEPS, setup.chunks, 0, IMAGES)
}

fn two_replicas(setup: Setup, start: &SslModel<AB>) -> Vec<(Vec<StepReport>, Weights)> {
    let world = 2;
    let threads: Vec<_> = (0..world)
        .map(|rank| {
            let start = start.clone();
            std::thread::spawn(move || {
                let device = Default::default();
                let peer = CollectivePeer::register::<Flex>(rank, world, &device).unwrap();
                let mut t = Trainer::new(start, loss_config(setup), OptimConfig::default());
                t.replicas = Some(Arc::new(peer));
                let count = IMAGES / world;
                let out = train(t, STEPS, setup.chunks, rank * count, count);
                peer.finish::<Flex>().unwrap();
                out
            })
        })
        .collect();
    threads.into_iter().map(|h| h.join().unwrap()).collect()
}

fn compare(setup: Setup, label: &str) {
    let start = student::<AB>(11, None, &Default::default());
    let (reports, reference) = one_replica(setup, &start);
    let replicas = two_replicas(setup, &start);
    let (r0, w0) = &replicas[0];
    let (r1, w1) = &replicas[1];
    assert_eq!(w0, w1, "{label}: the replicas' weights are identical");
    let mut worst_loss: f64 = 0.0;
    for (step, ((one, a), b)) in reports.iter().zip(r0).zip(r1).enumerate() {
        assert_eq!(a, b, "{label}: both replicas report the global batch");
        worst_loss = worst_loss.max(relative(one.loss.total, a.loss.total));
        for (name, v) in one.loss.terms.iter() {
            let got = a.loss.terms.value(name);
            assert!(
                (v - got).abs() <= 1e-5 * v.abs().max(1e-3),
                "{label}, iteration {step}, {name}: one replica {v}, two {got}"
            );
        }
        assert!(
            relative(one.loss.teacher_entropy, a.loss.teacher_entropy) <= 1e-5,
            "{label}, iteration {step}: teacher entropy {} vs {}",
            one.loss.teacher_entropy,
            a.loss.teacher_entropy
        );
        assert!(
            relative(one.loss.cls_std, a.loss.cls_std) <= 1e-4,
            "{label}, iteration {step}: class-token std {} vs {}",
            one.loss.cls_std,
            a.loss.cls_std
        );
        assert!(
            relative(one.grad_norm_backbone, a.grad_norm_backbone) <= 1e-4,
            "{label}, iteration {step}: backbone gradient norm {} vs {}",
            one.grad_norm_backbone,
            a.grad_norm_backbone
        );
    }
    let worst = worst_weight(&reference, w0);
    eprintln!(
        "{label}: {STEPS} iterations, worst relative loss difference {worst_loss:.2e}, \
         worst weight difference {:.2e} ({})",
        worst.0, worst.1
    );
    assert!(worst_loss <= 1e-5, "{label}: loss {worst_loss:e}");
    assert!(
        worst.0 <= 1e-5,
        "{label}: weight {} differs by {:e}",
        worst.1,
        worst.0
    );
    // The runs learn: the student's first block moved.
    let before: Weights = snapshot::<AB, _>(&start)
        .into_iter()
        .map(|(k, v)| (format!("student.{k}"), v.data))
        .collect();
    let moved = before
        .iter()
        .filter(|(k, v)| k.starts_with("student.backbone.blocks.0") && reference[*k] != **v)
        .count();
    assert!(moved > 0, "{label}: the backbone did not move");
}

// One test: the collective's peers are per process, so the scenarios take turns.
#[test]
fn two_replicas_of_half_batches_train_as_one_replica_of_the_whole_batch() {
    compare(
        Setup {
            centering: Centering::SinkhornKnopp,
            chunks: 1,
        },
        "Sinkhorn-Knopp, whole shards",
    );
    compare(
        Setup {
            centering: Centering::Softmax,
            chunks: 2,
        },
        "softmax centering, shards in 2 chunks",
    );
}
