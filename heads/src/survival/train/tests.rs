//! Learning tests with a planted signal: a few "marker" tiles per slide carry a direction whose
//! strength sets the slide's hazard; event times are exponential with that hazard, with random
//! censoring. The head must rank held-out slides (C-index > 0.75) and attend to the marker tiles.

use super::*;
use crate::survival::{concordance_index, Bags, TimeBins};
use burn::backend::{Autodiff, Flex};
use rand::Rng;

type AB = Autodiff<Flex>;

const DIM: usize = 16;

struct Cohort {
    set: BagSet,
    time: Vec<f64>,
    event: Vec<bool>,
    /// Per slide: is each tile a marker tile.
    marker: Vec<Vec<bool>>,
    /// Per slide: the planted log hazard.
    log_hazard: Vec<f64>,
}

fn normal(rng: &mut StdRng) -> f32 {
    // Box–Muller.
    let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random());
    ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
}

fn cohort(slides: usize, seed: u64) -> Cohort {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = Cohort {
        set: BagSet::on_host(DIM, Vec::new(), Vec::new()),
        time: Vec::new(),
        event: Vec::new(),
        marker: Vec::new(),
        log_hazard: Vec::new(),
    };
    for _ in 0..slides {
        let strength: f64 = rng.random_range(-1.0..1.0);
        let n = rng.random_range(16..40);
        let markers = rng.random_range(2..6);
        let mut bag = Vec::with_capacity(n * DIM);
        let mut is_marker = Vec::with_capacity(n);
        for t in 0..n {
            let m = t < markers;
            for d in 0..DIM {
                let mut v = 0.5 * normal(&mut rng);
                if m && d == 0 {
                    v += 4.0; // the marker direction
                }
                if m && d == 1 {
                    v += 3.0 * strength as f32; // the signal, only on marker tiles
                }
                bag.push(v);
            }
            is_marker.push(m);
        }
        c.log_hazard.push(3.0 * strength);
        let hazard = (3.0 * strength).exp();
        let u: f64 = rng.random_range(1e-12..1.0);
        let t_event = -u.ln() / hazard;
        let u: f64 = rng.random_range(1e-12..1.0);
        let t_censor = -u.ln() / 0.3;
        c.time.push(t_event.min(t_censor));
        c.event.push(t_event <= t_censor);
        if let Bags::Host(bags) = &mut c.set.bags {
            bags.push(bag);
        }
        c.marker.push(is_marker);
    }
    c
}

const SLIDES: usize = 240;

/// Dropout draws from the backend's generator, which the tests of this binary share: the
/// learning tests take turns so each run is reproducible.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Train on 3/4 of a planted cohort; the held-out C-index and how many times more attention
/// the marker tiles get than a uniform attention would give them.
fn learns(loss: SurvivalLoss, lr: f64) -> (f64, f64) {
    let _turn = BACKEND_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let c = cohort(SLIDES, 11);
    let (train_idx, test_idx): (Vec<usize>, Vec<usize>) = (0..SLIDES).partition(|i| i % 4 != 0);
    let cfg = SurvivalTrainConfig {
        loss: loss.clone(),
        hidden: 32,
        attention: 16,
        dropout: 0.25,
        epochs: 30,
        lr,
        weight_decay: 1e-4,
        batch_size: 16,
        seed: 3,
    };
    let device = Default::default();
    let mut losses = Vec::new();
    let model = train_valid::<AB>(&c.set, &c.time, &c.event, &train_idx, &cfg, &device, |p| {
        losses.push(p.loss)
    })
    .unwrap();

    assert!(losses[29] < losses[0], "the loss fell: {losses:?}");
    let pred = predict(&model, &loss, &c.set, &test_idx, &device).unwrap();
    let risk: Vec<f64> = pred.iter().map(|p| p.risk).collect();
    let t: Vec<f64> = test_idx.iter().map(|&i| c.time[i]).collect();
    let e: Vec<bool> = test_idx.iter().map(|&i| c.event[i]).collect();
    let cindex = concordance_index(&t, &e, &risk).unwrap().c_index;
    let oracle: Vec<f64> = test_idx.iter().map(|&i| c.log_hazard[i]).collect();
    let oracle = concordance_index(&t, &e, &oracle).unwrap().c_index;
    // Attention mass on the marker tiles, and the share of the tiles they are.
    let share: f64 = test_idx
        .iter()
        .map(|&i| c.marker[i].iter().filter(|&&m| m).count() as f64 / c.marker[i].len() as f64)
        .sum::<f64>()
        / test_idx.len() as f64;
    let mass: f64 = pred
        .iter()
        .zip(&test_idx)
        .map(|(p, &i)| {
            p.attention
                .iter()
                .zip(&c.marker[i])
                .filter(|(_, &m)| m)
                .map(|(a, _)| *a as f64)
                .sum::<f64>()
        })
        .sum::<f64>()
        / test_idx.len() as f64;
    eprintln!(
        "{}: held-out C-index {cindex:.3} (planted hazards: {oracle:.3}), attention on the \
         marker tiles {mass:.3} (their share of the tiles: {share:.3})",
        loss.name()
    );
    (cindex, mass / share)
}

#[test]
fn cox_abmil_ranks_held_out_slides_and_attends_to_the_marker_tiles() {
    let (cindex, focus) = learns(SurvivalLoss::Cox, 2e-3);
    assert!(cindex > 0.75, "C-index {cindex}");
    assert!(
        focus > 3.0,
        "attention on the marker tiles: {focus}x uniform"
    );
}

#[test]
fn nll_abmil_ranks_held_out_slides_and_attends_to_the_marker_tiles() {
    let c = cohort(SLIDES, 11);
    let bins = TimeBins::quantiles(&c.time, &c.event, 4).unwrap();
    let (cindex, focus) = learns(SurvivalLoss::Nll { bins, alpha: 0.0 }, 2e-3);
    assert!(cindex > 0.75, "C-index {cindex}");
    assert!(
        focus > 3.0,
        "attention on the marker tiles: {focus}x uniform"
    );
}

#[test]
fn same_seed_same_head_and_bad_input_is_an_error() {
    // Without dropout the run uses only the host generators (tests run in parallel and share
    // the backend's generator).
    let c = cohort(12, 1);
    let cfg = SurvivalTrainConfig {
        loss: SurvivalLoss::Cox,
        hidden: 8,
        attention: 4,
        dropout: 0.0,
        epochs: 2,
        lr: 1e-3,
        weight_decay: 0.0,
        batch_size: 4,
        seed: 9,
    };
    let device = Default::default();
    let idx: Vec<usize> = (0..12).collect();
    let run = || {
        let m = train_valid::<AB>(&c.set, &c.time, &c.event, &idx, &cfg, &device, |_| {}).unwrap();
        predict(&m, &SurvivalLoss::Cox, &c.set, &idx, &device).unwrap()
    };
    let first = run();
    assert_eq!(first, run());
    let other = SurvivalTrainConfig {
        seed: 10,
        ..cfg.clone()
    };
    let m = train_valid::<AB>(&c.set, &c.time, &c.event, &idx, &other, &device, |_| {}).unwrap();
    assert_ne!(
        first,
        predict(&m, &SurvivalLoss::Cox, &c.set, &idx, &device).unwrap()
    );
    let mut bad = c.set.clone();
    let Bags::Host(bags) = &mut bad.bags else {
        unreachable!("the test cohort is on the host")
    };
    bags[3].pop();
    assert!(matches!(
        train_valid::<AB>(&bad, &c.time, &c.event, &idx, &cfg, &device, |_| {}),
        Err(SurvivalError::Dimension { index: 3, .. })
    ));
    if let Bags::Host(bags) = &mut bad.bags {
        bags[3].clear();
    }
    assert_eq!(
        train_valid::<AB>(&bad, &c.time, &c.event, &idx, &cfg, &device, |_| {}).err(),
        Some(SurvivalError::EmptyBag(3))
    );
}
