//! Whole-network plans on the shipped network: the safetensors converter's `--speedup` plans
//! exactly as `dac::plan` does on the same layers, with the Frobenius and the correlated fit.
#![cfg(feature = "safetensors")]

use crate::support::net;
use dac::io::{convert_file, ConvertOptions, SvdMethod};
use dac::plan::{PlanLayer, PlanOptions, Proxy, Target};
use dac::svd::NalgebraSvd;
use dac::{Factorization, Fit};

/// The converter plans exactly as `dac::plan` with the default proxy on `PlanLayer::from_conv`
/// layers (which carry their weights, as `Proxy::Spatial` needs): same ranks and MACs, on the
/// shipped network, whose plans differ between proxies that do and do not read the weights.
#[test]
fn converter_plan_is_the_library_plan_of_the_weights() {
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
        let mut convert = ConvertOptions::speedup(target).input_size(32, 32).svd(SvdMethod::Nalgebra);
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

/// On the shipped network: `PlanLayer::from_factorization` of Frobenius factorisations plans
/// exactly as `from_conv` + `with_weights`; with the correlated fit, the converter's
/// `--speedup` plans exactly as `dac::plan` over `from_factorization` layers.
#[test]
fn from_factorization_plans_on_the_shipped_network() {
    let root = net::repo_root();
    let stem = root.join("models/fmnist_vgg");
    let net = net::Net::load(&stem).unwrap();
    let svd = NalgebraSvd::default();
    let frob: Vec<_> = net.convs.iter().map(|l| Factorization::compute(l, &svd).unwrap()).collect();
    let spectra: Vec<_> = frob.iter().map(Factorization::spectrum).collect();
    let from_conv: Vec<PlanLayer<'_>> = net
        .convs
        .iter()
        .zip(&spectra)
        .zip(&net.conv_inputs)
        .map(|((l, s), &hw)| PlanLayer::from_conv(l, s, hw).unwrap().with_weights(l.weight()).unwrap())
        .collect();
    let from_fact: Vec<PlanLayer<'_>> = frob
        .iter()
        .zip(&spectra)
        .zip(&net.conv_inputs)
        .map(|((f, s), &hw)| PlanLayer::from_factorization(f, s, hw).unwrap())
        .collect();
    let fit = Fit::correlated(Fit::DEFAULT_RHO).unwrap();
    let corr: Vec<_> = net.convs.iter().map(|l| Factorization::compute_fitted(l, &svd, fit).unwrap()).collect();
    let corr_spectra: Vec<_> = corr.iter().map(Factorization::spectrum).collect();
    let corr_layers: Vec<PlanLayer<'_>> = corr
        .iter()
        .zip(&corr_spectra)
        .zip(&net.conv_inputs)
        .map(|((f, s), &hw)| PlanLayer::from_factorization(f, s, hw).unwrap())
        .collect();
    let options = PlanOptions::default().fixed(net.fixed_cost());
    let dir = tempfile::tempdir().unwrap();
    let mut differs = false;
    for target in [1.5, 2.0, 3.0] {
        let t = Target::MacReduction(target);
        for proxy in [Proxy::Spatial, Proxy::Sensitivity, Proxy::Energy] {
            let a = dac::plan(&from_conv, &t, &options.proxy(proxy)).unwrap();
            let b = dac::plan(&from_fact, &t, &options.proxy(proxy)).unwrap();
            assert_eq!(a, b, "{target}x {proxy:?}");
        }
        let frobenius_plan = dac::plan(&from_fact, &t, &options).unwrap();
        let want = dac::plan(&corr_layers, &t, &options).unwrap();
        differs |= want.layers.iter().zip(&frobenius_plan.layers).any(|(a, b)| a.rank != b.rank);
        let out = dir.path().join(format!("out-{target}.safetensors"));
        let mut convert = ConvertOptions::speedup(target).input_size(32, 32).svd(SvdMethod::Nalgebra).fit(fit);
        for (l, &(h, w)) in net.convs.iter().zip(&net.conv_inputs) {
            convert = convert.layer_input(l.name(), h, w);
        }
        let got = convert_file(stem.with_extension("safetensors"), &out, &convert).unwrap();
        assert_eq!(got.fit, fit);
        let got = got.plan.expect("a plan");
        assert_eq!(got.after.macs, want.after.macs, "{target}x");
        for (g, w) in got.layers.iter().zip(&want.layers) {
            assert_eq!((&g.name, g.rank), (&w.name, w.rank), "{target}x");
        }
    }
    assert!(differs, "the correlated fit should plan differently somewhere");
}
