//! The correlated-input fit through the converter and the binary (`dac convert --fit`), and the
//! planner's `PlanLayer::from_factorization` on the shipped network.
#![cfg(feature = "cli")]

mod common;
mod io_support;
use dac_fmnist as net;

use dac::exec::{self, Tensor4};
use dac::io::{convert_file, read_records, ConvertOptions, SvdMethod};
use dac::plan::{PlanLayer, PlanOptions, Proxy, Target};
use dac::svd::NalgebraSvd;
use dac::{Conv2dWeights, DepthwiseR, Factorization, Fit, Padding, Pointwise};
use io_support::{decode, float, write};
use nalgebra::{DMatrix, SymmetricEigen};
use safetensors::SafeTensors;
use std::process::Command;

fn dac(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dac")).args(args).output().unwrap()
}

/// The test's own correlated fit of one layer: per input channel, the SVD of `M R^{1/2}`
/// truncated at `rank`, times `R^{-1/2}` (f64, nalgebra), as an OIHW weight.
fn own_correlated_fit(w: &[f64], dims: [usize; 4], groups: usize, rank: usize, rho: f64) -> Vec<f64> {
    let [n, cg, kh, kw] = dims;
    let (taps, ng) = (kh * kw, n / groups);
    let r = DMatrix::from_fn(taps, taps, |a, b| {
        let d = (a / kw).abs_diff(b / kw) + (a % kw).abs_diff(b % kw);
        rho.powi(d as i32)
    });
    let eig = SymmetricEigen::new(r);
    let power = |p: f64| {
        let d = DMatrix::from_diagonal(&eig.eigenvalues.map(|l| l.powf(p)));
        &eig.eigenvectors * d * eig.eigenvectors.transpose()
    };
    let (half, inv_half) = (power(0.5), power(-0.5));
    let mut out = vec![0.0; w.len()];
    for c in 0..groups * cg {
        let (g, cl) = (c / cg, c % cg);
        let m = DMatrix::from_fn(ng, taps, |o, t| w[((g * ng + o) * cg + cl) * taps + t]);
        let svd = (&m * &half).svd(true, true);
        let (u, s, vt) = (svd.u.unwrap(), svd.singular_values, svd.v_t.unwrap());
        let mut order: Vec<usize> = (0..s.len()).collect();
        order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
        let mut approx = DMatrix::<f64>::zeros(ng, taps);
        for &j in order.iter().take(rank) {
            approx += u.column(j) * s[j] * vt.row(j);
        }
        let approx = approx * &inv_half;
        for o in 0..ng {
            for t in 0..taps {
                out[((g * ng + o) * cg + cl) * taps + t] = approx[(o, t)];
            }
        }
    }
    out
}

/// `dac convert --fit correlated` writes, for every layer, a pair whose outputs (reference
/// executor) are those of the test's own correlated fit; the file and the summary name the fit.
/// `--fit bogus` fails cleanly and writes nothing.
#[test]
fn binary_correlated_fit_writes_the_fitted_pair() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let specs: [(&str, [usize; 4], usize, bool); 3] =
        [("c0", [8, 3, 3, 3], 1, true), ("c1", [16, 8, 3, 3], 1, false), ("c2", [6, 2, 5, 5], 2, true)];
    let mut tensors = Vec::new();
    for (i, (name, dims, _, bias)) in specs.iter().enumerate() {
        tensors.push(float(&format!("{name}.weight"), "F32", dims, 21 + i as u64));
        if *bias {
            tensors.push(float(&format!("{name}.bias"), "F32", &[dims[0]], 31 + i as u64));
        }
    }
    write(&input, &tensors, &[]);
    let out = dir.path().join("out.safetensors");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let run = dac(&["convert", i, "-o", o, "--rank", "2", "--fit", "correlated", "--groups", "c2=2", "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["fit"], "correlated=0.7");
    assert_eq!(summary["converted"].as_array().unwrap().len(), 3);

    let (ib, ob) = (std::fs::read(&input).unwrap(), std::fs::read(&out).unwrap());
    let (src, dst) = (SafeTensors::deserialize(&ib).unwrap(), SafeTensors::deserialize(&ob).unwrap());
    let get = |st: &SafeTensors<'_>, name: &str| decode(st.tensor(name).unwrap().data(), "F32");
    let records = read_records(&out).unwrap();
    let mut rng = common::Rng::new(3);
    for (name, dims, groups, bias) in specs {
        let rec = records.iter().find(|r| r.name == name).unwrap();
        assert_eq!((rec.rank, rec.fit.as_str()), (2, "correlated=0.7"), "{name}");
        let [n, cg, kh, kw] = dims;
        let c = cg * groups;
        let padding = Padding::uniform(1);
        let w = get(&src, &format!("{name}.weight"));
        let b = bias.then(|| get(&src, &format!("{name}.bias")));
        let own = own_correlated_fit(&w, dims, groups, 2, 0.7);
        let reference =
            Conv2dWeights::builder(own, dims).groups(groups).padding(padding).maybe_bias(b.clone()).build().unwrap();
        let dw = Conv2dWeights::builder(get(&dst, &format!("{name}.depthwise.weight")), [c * 2, 1, kh, kw])
            .groups(c)
            .padding(padding)
            .build()
            .unwrap();
        let pb = bias.then(|| get(&dst, &format!("{name}.pointwise.bias")));
        assert_eq!(pb, b, "{name}: the bias is the original's");
        let pw = Conv2dWeights::builder(get(&dst, &format!("{name}.pointwise.weight")), [n, cg * 2, 1, 1])
            .groups(groups)
            .maybe_bias(pb)
            .build()
            .unwrap();
        let (dw, pw) = (DepthwiseR::from_conv(dw, 2).unwrap(), Pointwise::from_conv(pw).unwrap());
        let x = Tensor4::new(rng.vec::<f64>(2 * c * 7 * 6), [2, c, 7, 6]).unwrap();
        let want = exec::reference::conv2d(&x, &reference).unwrap();
        let got = exec::reference::pair(&x, &dw, &pw).unwrap();
        let err = want.max_abs_diff(&got).unwrap();
        assert!(err <= 1e-4 * want.max_abs(), "{name}: max diff {err:e} vs scale {:e}", want.max_abs());
        // And it is not the Frobenius pair.
        let dense = exec::reference::conv2d(
            &x,
            &Conv2dWeights::builder(w, dims).groups(groups).padding(padding).maybe_bias(b).build().unwrap(),
        )
        .unwrap();
        assert!(dense.max_abs_diff(&got).unwrap() > 1e-3 * dense.max_abs(), "{name}: rank 2 is not exact");
    }
    // Bad values: a one-line error naming the flag and the value; nothing written.
    for bad in ["bogus", "correlated=1", "correlated=-0.1", "correlated=x"] {
        let none = dir.path().join("none.safetensors");
        let run = dac(&["convert", i, "-o", none.to_str().unwrap(), "--rank", "2", "--fit", bad]);
        assert!(!run.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(err.contains("--fit") && err.contains(bad), "{bad}: {err}");
        assert!(!none.exists(), "{bad}");
    }
    // The default writes no fit into the records, and the table names the fit.
    let plain = dir.path().join("plain.safetensors");
    let run = dac(&["convert", i, "-o", plain.to_str().unwrap(), "--rank", "2", "--groups", "c2=2"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("fit: frobenius"));
    let pb = std::fs::read(&plain).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&pb).unwrap();
    let meta = meta.metadata().as_ref().unwrap();
    assert!(meta.iter().filter(|(k, _)| k.starts_with("dac.layer.")).all(|(_, v)| !v.contains("fit")));
    assert!(read_records(&plain).unwrap().iter().all(|r| r.fit == "frobenius"));
    let run = dac(&["convert", i, "-o", o, "--rank", "2", "--fit", "correlated=0.5", "--groups", "c2=2", "--force"]);
    assert!(String::from_utf8_lossy(&run.stdout).contains("fit: correlated, rho = 0.5"));
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
