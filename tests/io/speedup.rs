//! `ConvertOptions::speedup`: a whole-network plan from the weights alone, through the library
//! (the binary's `--speedup`: tests/cli/speedup.rs).
#![cfg(feature = "safetensors")]

use crate::support::files::{small_net, stack, write};
use dac::io::{convert_file, read_records, ConvertOptions, SizeSource};

#[test]
fn library_plan_meets_the_target_and_counts_linear_layers() {
    let dir = tempfile::tempdir().unwrap();
    let input = stack(dir.path());
    let out = dir.path().join("out.safetensors");
    let options = ConvertOptions::macs(2.0).input_size(16, 16).layer_input("c3", 4, 4);
    let s = convert_file(&input, &out, &options).unwrap();
    let plan = s.plan.as_ref().expect("a plan");
    assert!(plan.met);
    let (before, after) = (s.macs_before().unwrap(), s.macs_after().unwrap());
    assert!(before as f64 >= 2.0 * after as f64, "{before} -> {after}");
    // Totals include the linear layer (10x64 MACs) and agree with the planner's.
    assert_eq!(s.linear.macs, 640);
    assert_eq!(before, plan.before.macs);
    assert_eq!(after, plan.after.macs);
    // c3 used its own size; the others the default.
    let c3_before = 4 * 4 * 64 * 64 * 9;
    type Row = (String, bool, Option<(usize, usize)>);
    let all: Vec<Row> = s
        .converted
        .iter()
        .map(|l| (l.name.clone(), l.size == SizeSource::Default, l.input_size))
        .chain(s.skipped.iter().map(|l| (l.name.clone(), l.size == SizeSource::Default, l.input_size)))
        .collect();
    for (name, default, size) in &all {
        assert_eq!(*default, name != "c3", "{name}");
        assert_eq!(*size, Some(if name == "c3" { (4, 4) } else { (16, 16) }));
    }
    let c3_cost = s.converted.iter().find(|l| l.name == "c3").and_then(|l| l.before).map(|c| c.macs);
    let c3_cost = c3_cost.or_else(|| s.skipped.iter().find(|l| l.name == "c3").and_then(|l| l.cost).map(|c| c.macs));
    assert_eq!(c3_cost, Some(c3_before));
    // The file records exactly the planned ranks.
    let records = read_records(&out).unwrap();
    for l in &plan.layers {
        let rec = records.iter().find(|r| r.name == l.name);
        assert_eq!(rec.map(|r| r.rank), l.rank, "{}", l.name);
    }
}

#[test]
fn a_target_needs_input_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let input = stack(dir.path());
    let out = dir.path().join("out.safetensors");
    let e = convert_file(&input, &out, &ConvertOptions::macs(2.0)).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("stack.safetensors") && msg.contains("input size") && msg.contains("c0"), "{msg}");
    assert!(!out.exists());
    let e = convert_file(&input, &out, &ConvertOptions::macs(0.5).input_size(8, 8)).unwrap_err();
    assert!(e.to_string().contains("MAC reduction = 0.5"), "{e}");
    assert!(!out.exists());
}

#[test]
fn unreachable_target_is_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    write(&input, &small_net("F32"), &[]);
    let out = dir.path().join("o.safetensors");
    let s = convert_file(&input, &out, &ConvertOptions::macs(1000.0).input_size(8, 8).groups("conv3", 2)).unwrap();
    let plan = s.plan.unwrap();
    assert!(!plan.met);
    assert!(plan.reduction() < 1000.0 && plan.reduction() > 1.0);
}

#[test]
fn require_target_turns_an_unreachable_target_into_an_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    write(&input, &small_net("F32"), &[]);
    let out = dir.path().join("o.safetensors");
    let base = ConvertOptions::macs(1000.0).input_size(8, 8).groups("conv3", 2);
    let e = convert_file(&input, &out, &base.clone().require_target(true)).unwrap_err();
    let max = convert_file(&input, &out, &base).unwrap().plan.unwrap().max_reduction;
    std::fs::remove_file(&out).unwrap();
    let dac::Error::InFile { file, source } = e else { panic!("expected the file named, got {e}") };
    assert_eq!(file, input);
    match *source {
        dac::Error::TargetNotMet { target, reached, max: m } => {
            assert_eq!(target, dac::plan::Target::MacReduction(1000.0));
            assert!(reached > 1.0 && reached < 1000.0, "{reached}");
            assert_eq!(m, max);
        }
        other => panic!("expected TargetNotMet, got {other}"),
    }
    assert!(!out.exists());
    // A target that is met is written as without the option (MACs only: on 8x8 maps this
    // network's factors are modeled slower than its dense layers).
    let met = ConvertOptions::macs(1.2).input_size(8, 8).allow_slower(true);
    let s = convert_file(&input, &out, &met.require_target(true)).unwrap();
    assert!(s.plan.unwrap().met && out.exists());
}
