//! `dac convert --speedup X`: a whole-network plan from the weights alone, through the library
//! and the binary.
#![cfg(feature = "cli")]

mod io_support;
use dac_fmnist as net;

use dac::io::{convert_file, read_records, ConvertOptions};
use io_support::{float, small_net, write};
use std::process::Command;

/// A VGG-like stack: four 3x3 convolutions at shrinking sizes and a linear layer.
fn stack(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("stack.safetensors");
    write(
        &p,
        &[
            float("c0.weight", "F32", &[16, 3, 3, 3], 11),
            float("c0.bias", "F32", &[16], 12),
            float("c1.weight", "F32", &[32, 16, 3, 3], 13),
            float("c2.weight", "F32", &[64, 32, 3, 3], 14),
            float("c2.bias", "F32", &[64], 15),
            float("c3.weight", "F32", &[64, 64, 3, 3], 16),
            float("fc.weight", "F32", &[10, 64], 17),
            float("fc.bias", "F32", &[10], 18),
        ],
        &[],
    );
    p
}

#[test]
fn library_plan_meets_the_target_and_counts_linear_layers() {
    let dir = tempfile::tempdir().unwrap();
    let input = stack(dir.path());
    let out = dir.path().join("out.safetensors");
    let options = ConvertOptions::speedup(2.0).input_size(16, 16).layer_input("c3", 4, 4);
    let s = convert_file(&input, &out, &options).unwrap();
    let plan = s.plan.as_ref().expect("a plan");
    assert!(plan.met);
    assert!(s.macs_before() as f64 >= 2.0 * s.macs_after() as f64, "{} -> {}", s.macs_before(), s.macs_after());
    // Totals include the linear layer (10x64 MACs) and agree with the planner's.
    assert_eq!(s.linear.macs, 640);
    assert_eq!(s.macs_before(), plan.before.macs);
    assert_eq!(s.macs_after(), plan.after.macs);
    // c3 used its own size; the others the default.
    let c3_before = 4 * 4 * 64 * 64 * 9;
    type Row = (String, bool, Option<(usize, usize)>);
    let all: Vec<Row> = s
        .converted
        .iter()
        .map(|l| (l.name.clone(), l.default_input, l.input_size))
        .chain(s.skipped.iter().map(|l| (l.name.clone(), l.default_input, l.input_size)))
        .collect();
    for (name, default, size) in &all {
        assert_eq!(*default, name != "c3", "{name}");
        assert_eq!(*size, Some(if name == "c3" { (4, 4) } else { (16, 16) }));
    }
    let c3_cost = s.converted.iter().find(|l| l.name == "c3").map(|l| l.before.macs);
    let c3_cost = c3_cost.or_else(|| s.skipped.iter().find(|l| l.name == "c3").map(|l| l.cost.macs));
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
    let e = convert_file(&input, &out, &ConvertOptions::speedup(2.0)).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("stack.safetensors") && msg.contains("input size") && msg.contains("c0"), "{msg}");
    assert!(!out.exists());
    let e = convert_file(&input, &out, &ConvertOptions::speedup(0.5).input_size(8, 8)).unwrap_err();
    assert!(e.to_string().contains("MAC reduction = 0.5"), "{e}");
    assert!(!out.exists());
}

#[test]
fn binary_speedup_json_shows_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let input = stack(dir.path());
    let out = dir.path().join("o.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_dac"))
        .args(["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .args(["--speedup", "1.5", "--input", "16x16", "--layer-input", "c3=4x4", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["plan"]["met"], true);
    assert_eq!(v["plan"]["target_mac_reduction"], 1.5);
    assert!(v["total"]["reduction"].as_f64().unwrap() >= 1.5);
    assert_eq!(v["linear_macs"], 640);
    assert_eq!(v["plan"]["layers"].as_array().unwrap().len(), 4);
    let defaults: Vec<bool> = v["converted"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["skipped"].as_array().unwrap())
        .filter(|l| l["name"] == "c3")
        .map(|l| l["default_input"].as_bool().unwrap())
        .collect();
    assert_eq!(defaults, [false]);

    // The table names the plan and the layers that used the default size.
    let o = Command::new(env!("CARGO_BIN_EXE_dac"))
        .args(["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--force"])
        .args(["--speedup", "1.5", "--input", "16x16"])
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("plan: target 1.5x fewer MACs met"), "{text}");
    assert!(text.contains("used the default --input size"), "{text}");

    // --speedup conflicts with --rank.
    let o = Command::new(env!("CARGO_BIN_EXE_dac"))
        .args(["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--force"])
        .args(["--speedup", "2", "--rank", "1", "--input", "8"])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

#[test]
fn unreachable_target_is_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    write(&input, &small_net("F32"), &[]);
    let out = dir.path().join("o.safetensors");
    let s = convert_file(&input, &out, &ConvertOptions::speedup(1000.0).input_size(8, 8).groups("conv3", 2)).unwrap();
    let plan = s.plan.unwrap();
    assert!(!plan.met);
    assert!(plan.reduction() < 1000.0 && plan.reduction() > 1.0);
}

/// The converter plans exactly as `dac::plan` with the default proxy on `PlanLayer::from_conv`
/// layers (which carry their weights, as `Proxy::Spatial` needs): same ranks and MACs, on the
/// shipped network, whose plans differ between proxies that do and do not read the weights.
#[test]
fn converter_plan_is_the_library_plan_of_the_weights() {
    use dac::plan::{PlanOptions, Proxy, Target};
    use dac::{svd::NalgebraSvd, Factorization};
    let root = net::repo_root();
    let stem = root.join("models/fmnist_vgg");
    let net = net::Net::load(&stem).unwrap();
    let spectra: Vec<_> =
        net.convs.iter().map(|l| Factorization::compute(l, &NalgebraSvd::default()).unwrap().spectrum()).collect();
    let layers = net.plan_layers(&spectra).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut differs = false;
    for target in [1.5, 2.0, 3.0] {
        let options = PlanOptions::default().fixed(net.fixed_cost());
        let want = dac::plan(&layers, &Target::MacReduction(target), &options).unwrap();
        let spectrum_only = dac::plan(&layers, &Target::MacReduction(target), &options.proxy(Proxy::Sensitivity));
        differs |= spectrum_only.unwrap().layers.iter().zip(&want.layers).any(|(a, b)| a.rank != b.rank);
        let out = dir.path().join(format!("out-{target}.safetensors"));
        let mut convert = ConvertOptions::speedup(target).input_size(32, 32).svd(dac::io::SvdMethod::Nalgebra);
        for (l, &(h, w)) in net.convs.iter().zip(&net.conv_inputs) {
            convert = convert.layer_input(l.name(), h, w);
        }
        let got = convert_file(stem.with_extension("safetensors"), &out, &convert).unwrap();
        let got = got.plan.expect("a plan");
        assert_eq!(got.after.macs, want.after.macs, "{target}x");
        for (g, w) in got.layers.iter().zip(&want.layers) {
            assert_eq!((&g.name, g.rank), (&w.name, w.rank), "{target}x");
        }
    }
    assert!(differs, "the check needs plans that depend on more than the spectra");
}
