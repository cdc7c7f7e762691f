//! Helpers shared by the integration tests: seeded data and an independent reconstruction.
#![allow(dead_code)]

use dac::{Conv2dWeights, DepthwiseR, Pointwise, Real};

/// SplitMix64: a tiny seeded generator so test data is reproducible from a proptest seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
    pub fn vec<T: Real>(&mut self, n: usize) -> Vec<T> {
        (0..n).map(|_| T::from_f64_lossy(self.uniform())).collect()
    }
}

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
