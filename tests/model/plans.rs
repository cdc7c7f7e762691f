//! Whole-network plans on the shipped network: the safetensors converter's `--macs` plans
//! exactly as `dac::plan` does on the same layers, with the Frobenius and the correlated fit
//! (with `allow_slower`, as `dac::plan` without a time guard; by default, as `dac::plan` with
//! it).
#![cfg(feature = "safetensors")]

use crate::support::net;
use dac::convert::SchemeChoice;
use dac::io::{convert_file, ConvertOptions, SvdMethod};
use dac::plan::{PlanOptions, Proxy, Target, AUTO_DEPTH_WEIGHT};
use dac::scheme::SchemeKind;
use dac::time::Layout;
use dac::Fit;

/// The converter plans exactly as `dac::plan` with the default proxy on `PlanLayer::new` layers
/// of the same factorisations (which carry their right singular vectors, as `Proxy::Spatial`
/// needs): same ranks and MACs, on the shipped network, whose plans differ between proxies that
/// do and do not read more than the spectra; with the Frobenius fit and with the correlated fit.
#[test]
fn converter_plan_is_the_library_plan_of_the_weights() {
    let root = net::repo_root();
    let stem = root.join("models/fmnist_vgg");
    let net = net::Net::load(&stem).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut differs, mut fits_differ) = (false, false);
    let frobenius = net.plan_layers(Fit::frobenius()).unwrap();
    for fit in [Fit::frobenius(), Fit::correlated(Fit::DEFAULT_RHO).unwrap()] {
        let layers = net.plan_layers(fit).unwrap();
        for target in [1.5, 2.0, 3.0] {
            let t = Target::MacReduction(target);
            let options = PlanOptions::default().fixed(net.fixed_cost());
            let want = dac::plan(&layers, &t, &options).unwrap();
            let spectrum_only = dac::plan(&layers, &t, &options.clone().proxy(Proxy::Sensitivity)).unwrap();
            differs |= spectrum_only.layers.iter().zip(&want.layers).any(|(a, b)| a.rank != b.rank);
            let frobenius_plan = dac::plan(&frobenius, &t, &options).unwrap();
            fits_differ |= frobenius_plan.layers.iter().zip(&want.layers).any(|(a, b)| a.rank != b.rank);
            let out = dir.path().join(format!("out-{target}-{fit}.safetensors"));
            let mut convert = ConvertOptions::macs(target)
                .input_size(32, 32)
                .svd(SvdMethod::Nalgebra)
                .fit(fit)
                .scheme(SchemeChoice::Only(SchemeKind::Dac))
                .allow_slower(true);
            for (l, &(h, w)) in net.convs.iter().zip(&net.conv_inputs) {
                convert = convert.layer_input(l.name(), h, w);
            }
            let got = convert_file(stem.with_extension("safetensors"), &out, &convert).unwrap();
            assert_eq!(got.fit, fit);
            let got = got.plan.expect("a plan");
            assert_eq!(got.after.macs, want.after.macs, "{target}x {fit}");
            for (g, w) in got.layers.iter().zip(&want.layers) {
                assert_eq!((&g.name, g.rank), (&w.name, w.rank), "{target}x {fit}");
            }
        }
    }
    assert!(differs, "the check needs plans that depend on more than the spectra");
    assert!(fits_differ, "the correlated fit should plan differently somewhere");
}

/// By default `--macs` lets the planner choose a scheme per layer, with every scheme fitted
/// for `Fit::AUTO_RHO`, and keeps dense the layers modeled slower than dense: the converter's
/// plan is `dac::plan` (with its time guard, DAC timed as the fused depthwise weight a
/// checkpoint stores) on `PlanLayer::with_schemes` of the same factorisations, scheme and rank
/// layer by layer, on both shipped networks.
#[test]
fn default_converter_plan_chooses_among_every_scheme() {
    let root = net::repo_root();
    let dir = tempfile::tempdir().unwrap();
    let auto = Fit::correlated(Fit::AUTO_RHO).unwrap();
    let schemes: Vec<(SchemeKind, Fit)> = SchemeKind::ALL.iter().map(|&k| (k, auto)).collect();
    let mut kinds = std::collections::HashSet::new();
    for name in ["fmnist_vgg", "fmnist_alt"] {
        let stem = root.join("models").join(name);
        let net = net::Net::load(&stem).unwrap();
        let layers = net.plan_layers_with(&schemes).unwrap();
        for target in [1.5, 3.0] {
            // A checkpoint's DAC pair is one depthwise weight of multiplier r: timed fused.
            let options = PlanOptions::default()
                .fixed(net.fixed_cost())
                .depth_weight(AUTO_DEPTH_WEIGHT)
                .time_guard(true)
                .layout(Layout::Fused);
            let want = dac::plan(&layers, &Target::MacReduction(target), &options).unwrap();
            let out = dir.path().join(format!("{name}-{target}.safetensors"));
            let mut convert = ConvertOptions::macs(target).input_size(32, 32).svd(SvdMethod::Nalgebra);
            for (l, &(h, w)) in net.convs.iter().zip(&net.conv_inputs) {
                let g = l.geometry();
                convert = convert
                    .layer_input(l.name(), h, w)
                    .groups(l.name(), g.groups)
                    .stride(l.name(), g.stride.0, g.stride.1)
                    .padding(l.name(), g.padding);
            }
            let got = convert_file(stem.with_extension("safetensors"), &out, &convert).unwrap();
            assert_eq!(got.fit, auto);
            let got = got.plan.expect("a plan");
            assert_eq!(got.after.macs, want.after.macs, "{name} {target}x");
            for (g, w) in got.layers.iter().zip(&want.layers) {
                assert_eq!((&g.name, g.scheme, g.rank), (&w.name, w.scheme, w.rank), "{name} {target}x");
                kinds.extend(g.scheme);
            }
        }
    }
    assert!(kinds.len() >= 2, "the plans should mix schemes: {kinds:?}");
}
