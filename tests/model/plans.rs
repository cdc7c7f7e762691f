//! Whole-network plans on the shipped network: the safetensors converter's `--speedup` plans
//! exactly as `dac::plan` does on the same layers, with the Frobenius and the correlated fit.
#![cfg(feature = "safetensors")]

use crate::support::net;
use dac::io::{convert_file, ConvertOptions, SvdMethod};
use dac::plan::{PlanOptions, Proxy, Target};
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
            let spectrum_only = dac::plan(&layers, &t, &options.proxy(Proxy::Sensitivity)).unwrap();
            differs |= spectrum_only.layers.iter().zip(&want.layers).any(|(a, b)| a.rank != b.rank);
            let frobenius_plan = dac::plan(&frobenius, &t, &options).unwrap();
            fits_differ |= frobenius_plan.layers.iter().zip(&want.layers).any(|(a, b)| a.rank != b.rank);
            let out = dir.path().join(format!("out-{target}-{fit}.safetensors"));
            let mut convert = ConvertOptions::speedup(target).input_size(32, 32).svd(SvdMethod::Nalgebra).fit(fit);
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
