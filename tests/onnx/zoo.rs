//! The zoo (`tests/data/zoo`): reduced-width torchvision architectures exported by PyTorch
//! (`scripts/zoo.py`), with the MACs PyTorch counted by forward hooks stored beside them.
//!
//! For every model: the totals equal PyTorch's count; every scheme at full rank, in every layout
//! it has, rewrites it exactly (tract); plans at 1.5x and 2x succeed, the rewritten models run, and the claimed
//! reduction is the ratio of MACs of the written model, counted afresh from its graph.
#![cfg(feature = "onnx")]

use crate::support::onnx::{relative_diff, run_tract};
use crate::support::values;
use dac::convert::{ConvertOptions, Layout, SchemeChoice, Summary};
use dac::io::onnx::rewrite_model;
use dac::scheme::SchemeKind;
use dac::time::layouts_of;
use dac::Rank;
use std::path::{Path, PathBuf};

struct Model {
    name: String,
    bytes: Vec<u8>,
    input: Vec<usize>,
    /// MACs PyTorch counted at batch 1.
    macs: u64,
}

fn zoo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/zoo")
}

/// Every model of the zoo; a missing file fails.
fn zoo() -> Vec<Model> {
    let dir = zoo_dir();
    let index = std::fs::read(dir.join("macs.json")).expect("tests/data/zoo/macs.json (scripts/zoo.py writes it)");
    let index: serde_json::Value = serde_json::from_slice(&index).expect("macs.json is JSON");
    let models: Vec<Model> = index
        .as_object()
        .expect("macs.json maps model names to entries")
        .iter()
        .map(|(name, e)| Model {
            name: name.clone(),
            bytes: std::fs::read(dir.join(e["file"].as_str().expect("file"))).expect("the model file"),
            input: e["input"].as_array().expect("input").iter().map(|d| d.as_u64().unwrap() as usize).collect(),
            macs: e["macs"].as_u64().expect("macs"),
        })
        .collect();
    assert!(models.len() >= 9, "the zoo has {} models", models.len());
    models
}

/// The model's MACs as dac counts them from its graph alone: a rewrite that converts nothing.
fn counted(bytes: &[u8]) -> u64 {
    let (out, report) = rewrite_model(bytes, &ConvertOptions::new(Rank::Fixed(usize::MAX))).expect("counts");
    assert!(report.converted.is_empty() && out == bytes);
    report.macs_before().unwrap_or_else(|| panic!("sizes unknown: {:?}", report.uncounted))
}

#[test]
fn totals_equal_pytorchs_count() {
    for m in zoo() {
        assert_eq!(counted(&m.bytes), m.macs, "{}", m.name);
    }
}

#[test]
fn every_scheme_at_full_rank_is_exact_in_tract() {
    for m in zoo() {
        let x = values(7, m.input.iter().product());
        let dense = run_tract(&m.bytes, &m.input, &x);
        // Every scheme in every layout it has (one for spatial and channel SVD).
        let layouts = |s| if layouts_of(s).is_empty() { &[Layout::Multiplier1][..] } else { layouts_of(s) };
        for scheme in SchemeKind::ALL {
            for &layout in layouts(scheme) {
                let options = ConvertOptions::new(Rank::Energy(1.0))
                    .allow_slower(true)
                    .scheme(SchemeChoice::Only(scheme))
                    .layout(layout);
                let (out, report) = rewrite_model(&m.bytes, &options).unwrap_or_else(|e| panic!("{}: {e}", m.name));
                assert!(!report.converted.is_empty(), "{}: nothing converted", m.name);
                let diff = relative_diff(&dense, &run_tract(&out, &m.input, &x));
                assert!(diff < 1e-4, "{} {} {layout:?}: full rank differs by {diff}", m.name, scheme.name());
            }
        }
    }
}

/// The claimed totals are those of the written model, counted from its graph.
fn check_claims(name: &str, original: &[u8], out: &[u8], report: &Summary) {
    let (before, after) = (report.macs_before().expect("before"), report.macs_after().expect("after"));
    assert_eq!(before, counted(original), "{name}");
    assert_eq!(after, counted(out), "{name}: the written model's MACs");
}

#[test]
fn plans_at_1_5x_and_2x_claim_what_they_write() {
    for m in zoo() {
        let x = values(8, m.input.iter().product());
        let dense = run_tract(&m.bytes, &m.input, &x);
        for target in [1.5, 2.0] {
            let (out, report) =
                rewrite_model(&m.bytes, &ConvertOptions::macs(target)).unwrap_or_else(|e| panic!("{}: {e}", m.name));
            check_claims(&m.name, &m.bytes, &out, &report);
            let plan = report.plan.as_ref().expect("a plan");
            let reduction = report.reduction().unwrap();
            if plan.met {
                assert!(reduction >= target * 0.999, "{} at {target}x: met but {reduction}", m.name);
            } else {
                assert!(reduction < target && plan.max_reduction < target, "{} at {target}x", m.name);
            }
            let y = run_tract(&out, &m.input, &x);
            assert_eq!(y.len(), dense.len(), "{}", m.name);
            assert!(y.iter().all(|v| v.is_finite()), "{}", m.name);
        }
    }
}

/// The modeled time of a model as the tool counts it: every layer left dense.
fn modeled(bytes: &[u8]) -> std::time::Duration {
    let (_, report) = rewrite_model(bytes, &ConvertOptions::new(Rank::Fixed(1)).exclude("*")).expect("counted");
    report.time_before().expect("every size known")
}

#[test]
fn speedup_plans_claim_the_modeled_time_of_what_they_write() {
    for m in zoo() {
        let x = values(9, m.input.iter().product());
        for target in [1.5, 2.0] {
            let (out, report) =
                rewrite_model(&m.bytes, &ConvertOptions::speedup(target)).unwrap_or_else(|e| panic!("{}: {e}", m.name));
            check_claims(&m.name, &m.bytes, &out, &report);
            assert_eq!(report.time_before(), Some(modeled(&m.bytes)), "{}: time before", m.name);
            assert_eq!(report.time_after(), Some(modeled(&out)), "{}: the written model's modeled time", m.name);
            let plan = report.plan.as_ref().expect("a plan");
            let speedup = report.speedup().unwrap();
            if plan.met {
                assert!(speedup >= target * 0.999, "{} at {target}x: met but {speedup}", m.name);
            } else {
                assert!(speedup < target && plan.max_speedup < target, "{} at {target}x", m.name);
            }
            // The break-even guard in time: every converted layer is modeled at least
            // MIN_TIME_GAIN faster than dense.
            for l in &report.converted {
                let (after, before) = (l.time_after.unwrap(), l.time_before.unwrap());
                let bound = before.as_secs_f64() * (1.0 - dac::plan::MIN_TIME_GAIN);
                assert!(after.as_secs_f64() <= bound + 1e-9, "{} {}: {after:?} vs {before:?}", m.name, l.name);
            }
            assert!(run_tract(&out, &m.input, &x).iter().all(|v| v.is_finite()), "{}", m.name);
        }
    }
}
