//! The correlated-input fit in the ONNX rewrite (`ConvertOptions::fit`), checked in tract.
#![cfg(feature = "onnx")]

use crate::support::onnx::*;
use crate::support::values;
use dac::convert::{ConvertOptions, Layout};
use dac::io::onnx::rewrite_model;
use dac::{Fit, Rank};

/// Three convolutions: padded 3x3 with bias, grouped + strided, dilated 5x3. Input
/// `[N, 3, 12, 12]`, output `y`.
fn net() -> Vec<u8> {
    let mut g = Graph::default();
    let mut conv = |name: &str, x: &str, y: &str, dims: [usize; 4], attrs: Vec<Vec<u8>>, seed: u64| {
        let w = format!("{name}.weight");
        let b = format!("{name}.bias");
        g.inits.push(tensor(&w, &dims, &values(seed, dims.iter().product())));
        g.inits.push(tensor(&b, &[dims[0]], &values(seed + 100, dims[0])));
        g.nodes.push(node("Conv", name, &[x, &w, &b], &[y], &attrs, &[]));
    };
    conv("conv0", "input", "c0", [16, 3, 3, 3], vec![attr_ints("pads", &[1, 1, 1, 1])], 1);
    conv("conv1", "c0", "c1", [16, 4, 3, 3], vec![attr_int("group", 4), attr_ints("strides", &[2, 2])], 2);
    conv(
        "conv2",
        "c1",
        "y",
        [10, 16, 5, 3],
        vec![attr_ints("dilations", &[2, 1]), attr_ints("pads", &[4, 1, 4, 1])],
        3,
    );
    g.inputs.push(value_info("input", &[None, Some(3), Some(12), Some(12)]));
    g.outputs.push(value_info("y", &[None, Some(10), Some(5), Some(5)]));
    model(&g, 13, &[])
}

const SHAPE: [usize; 4] = [2, 3, 12, 12];

#[test]
fn correlated_fit_full_rank_is_exact_and_low_rank_differs() {
    let m = net();
    let fit = Fit::correlated(0.7).unwrap();
    let x = values(42, SHAPE.iter().product());
    let reference = run_tract(&m, &SHAPE, &x);
    for layout in Layout::ALL {
        let options = ConvertOptions::new(Rank::Energy(1.0)).allow_slower(true).layout(layout).fit(fit);
        let (out, report) = rewrite_model(&m, &options).unwrap();
        assert_eq!(report.fit, fit);
        assert_eq!(report.to_json()["fit"], "correlated=0.7", "{}", report.to_json());
        assert_eq!(report.converted.len(), 3);
        for c in &report.converted {
            assert_eq!(c.rank, c.max_rank, "{}", c.name);
        }
        let d = relative_diff(&reference, &run_tract(&out, &SHAPE, &x));
        assert!(d < 1e-4, "{layout:?}: relative difference {d}");
    }
    // Rank 2: a different pair from the Frobenius one; the default is the Frobenius fit, byte
    // for byte.
    let (frob, fr) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(2))).unwrap();
    let (explicit, _) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(2)).fit(Fit::frobenius())).unwrap();
    assert_eq!(frob, explicit);
    assert_eq!(fr.fit, Fit::frobenius());
    let (corr, cr) = rewrite_model(&m, &ConvertOptions::new(Rank::Fixed(2)).fit(fit)).unwrap();
    assert_ne!(frob, corr);
    let (a, b) = (run_tract(&frob, &SHAPE, &x), run_tract(&corr, &SHAPE, &x));
    assert!(relative_diff(&a, &b) > 1e-4);
    for (f, c) in fr.converted.iter().zip(&cr.converted) {
        assert_ne!(f.relative_error, c.relative_error, "{}", f.name);
    }
    // Planned with the fitted spectra (MACs only: this small network's factors are modeled
    // slower than dense).
    let (out, report) = rewrite_model(&m, &ConvertOptions::macs(1.5).fit(fit).allow_slower(true)).unwrap();
    assert!(report.plan.unwrap().met);
    assert_eq!(run_tract(&out, &SHAPE, &x).len(), 2 * 10 * 25);
}
