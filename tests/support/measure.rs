//! Reconstruction and error measures written from the definitions, independently of the crate.

use dac::{Conv2dWeights, DepthwiseR, Pointwise, Real};

/// `Ŵ[n, c_local, t] = Σ_j pw[n, c_local·r + j] · dw[c·r + j, t]`, in f64, written from the
/// definition independently of the crate's own error measurement.
pub fn reconstruct<T: Real>(layer: &Conv2dWeights<T>, dw: &DepthwiseR<T>, pw: &Pointwise<T>) -> Vec<f64> {
    let [n_out, cg, kh, kw] = layer.dims();
    let groups = layer.geometry().groups;
    let ng = n_out / groups;
    let taps = kh * kw;
    let r = dw.rank();
    let (dwv, pwv) = (dw.conv().weight(), pw.conv().weight());
    let mut out = vec![0.0; n_out * cg * taps];
    for n in 0..n_out {
        for cl in 0..cg {
            let c = (n / ng) * cg + cl;
            for t in 0..taps {
                out[(n * cg + cl) * taps + t] = (0..r)
                    .map(|j| pwv[n * cg * r + cl * r + j].to_f64_exact() * dwv[(c * r + j) * taps + t].to_f64_exact())
                    .sum();
            }
        }
    }
    out
}

/// `‖a − b‖ / ‖b‖` in f64.
pub fn relative_diff(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    if den > 0.0 {
        (num / den).sqrt()
    } else {
        num.sqrt()
    }
}

/// The tap correlation `R[a][b] = ρ^(|Δy|·dh + |Δx|·dw)`, written from the definition.
pub fn correlation(kh: usize, kw: usize, dilation: (usize, usize), rho: f64) -> Vec<f64> {
    let taps = kh * kw;
    let mut r = vec![0.0; taps * taps];
    for a in 0..taps {
        for b in 0..taps {
            let dy = (a / kw).abs_diff(b / kw) * dilation.0;
            let dx = (a % kw).abs_diff(b % kw) * dilation.1;
            r[a * taps + b] = rho.powi((dy + dx) as i32);
        }
    }
    r
}

/// `Σ over (n, c) rows d of d R dᵀ`: the expected squared output error of a weight difference
/// `d` (OIHW, flattened) for input patches with covariance `R`.
pub fn weighted_energy(d: &[f64], r: &[f64], taps: usize) -> f64 {
    d.chunks(taps)
        .map(|row| (0..taps).map(|a| (0..taps).map(|b| row[a] * r[a * taps + b] * row[b]).sum::<f64>()).sum::<f64>())
        .sum()
}
