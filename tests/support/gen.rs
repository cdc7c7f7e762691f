//! The one seeded generator of the tests, and the convolution geometry space.
//!
//! [`Rng`] is SplitMix64 (uniform in [-1, 1) with 53 random bits). [`Rng::lcg`] is the same
//! generator with the 24-bit linear congruential stream the safetensors and ONNX fixtures have
//! always been written with ([`values`]), kept so that those files (and the thresholds their
//! tests assert) hold exactly the data they held before the tests were regrouped.

use dac::exec::Tensor4;
use dac::{Conv2dWeights, Padding, Real};
use proptest::prelude::*;

const LCG_MUL: u64 = 6364136223846793005;
const LCG_ADD: u64 = 1442695040888963407;

#[derive(Debug, Clone, Copy)]
enum Stream {
    SplitMix64,
    Lcg,
}

/// A small seeded generator so test data is reproducible from a seed (or a proptest seed).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
    stream: Stream,
}

impl Rng {
    /// SplitMix64 from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed, stream: Stream::SplitMix64 }
    }

    /// The fixtures' stream: a 64-bit LCG whose top 24 bits give each value.
    pub fn lcg(seed: u64) -> Self {
        Self { state: seed.wrapping_mul(LCG_MUL).wrapping_add(LCG_ADD), stream: Stream::Lcg }
    }

    pub fn next_u64(&mut self) -> u64 {
        match self.stream {
            Stream::SplitMix64 => {
                self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^ (z >> 31)
            }
            Stream::Lcg => {
                self.state = self.state.wrapping_mul(LCG_MUL).wrapping_add(LCG_ADD);
                self.state
            }
        }
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        let z = self.next_u64();
        match self.stream {
            Stream::SplitMix64 => (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0,
            Stream::Lcg => (z >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0,
        }
    }

    /// `n` uniform values in [-1, 1).
    pub fn vec<T: Real>(&mut self, n: usize) -> Vec<T> {
        (0..n).map(|_| T::from_f64_lossy(self.uniform())).collect()
    }

    /// A tensor of `dims` with uniform values.
    pub fn tensor<T: Real>(&mut self, dims: [usize; 4]) -> Tensor4<T> {
        Tensor4::new(self.vec(dims.iter().product()), dims).expect("valid tensor")
    }
}

/// `n` values of a fresh [`Rng::new`]`(seed)`.
pub fn seeded<T: Real>(seed: u64, n: usize) -> Vec<T> {
    Rng::new(seed).vec(n)
}

/// `n` values of a fresh [`Rng::lcg`]`(seed)`: the data of the safetensors and ONNX fixtures.
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    Rng::lcg(seed).vec(n)
}

/// One point of the geometry space: groups, channels per group, a possibly non-square kernel,
/// stride, dilation, asymmetric padding, bias, batch, the input's slack over the smallest
/// valid size, and the seed of its data.
#[derive(Debug, Clone)]
pub struct Case {
    pub batch: usize,
    pub groups: usize,
    pub in_per_group: usize,
    pub out_per_group: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (usize, usize),
    pub dilation: (usize, usize),
    pub padding: Padding,
    pub extra: (usize, usize),
    pub bias: bool,
    pub seed: u64,
}

/// The geometry space: up to 4 groups and 16 channels, kernels 1..=5 by 1..=5, strides and
/// dilations 1..=3, paddings 0..=2 on each side, with and without bias.
pub fn cases() -> impl Strategy<Value = Case> {
    (1usize..=4)
        .prop_flat_map(|groups| {
            let max_per_group = 16 / groups;
            (
                Just(groups),
                1..=max_per_group,
                1..=max_per_group,
                (1usize..=5, 1usize..=5),
                (1usize..=3, 1usize..=3),
                (1usize..=3, 1usize..=3),
                (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
                (0usize..=4, 0usize..=4),
                (1usize..=3, any::<bool>(), any::<u64>()),
            )
        })
        .prop_map(
            |(groups, cg, ng, (kh, kw), stride, dilation, (top, bottom, left, right), extra, (batch, bias, seed))| {
                Case {
                    batch,
                    groups,
                    in_per_group: cg,
                    out_per_group: ng,
                    kh,
                    kw,
                    stride,
                    dilation,
                    padding: Padding { top, bottom, left, right },
                    extra,
                    bias,
                    seed,
                }
            },
        )
}

impl Case {
    /// The layer and an input for it, from `Rng::new(seed)`: weight, bias, then input.
    pub fn build<T: Real>(&self) -> (Conv2dWeights<T>, Tensor4<T>) {
        let mut rng = Rng::new(self.seed);
        let n = self.groups * self.out_per_group;
        let c = self.groups * self.in_per_group;
        let dims = [n, self.in_per_group, self.kh, self.kw];
        let weight = rng.vec(dims.iter().product());
        let bias = self.bias.then(|| rng.vec(n));
        let layer = Conv2dWeights::builder(weight, dims)
            .name("prop")
            .maybe_bias(bias)
            .groups(self.groups)
            .stride(self.stride.0, self.stride.1)
            .dilation(self.dilation.0, self.dilation.1)
            .padding(self.padding)
            .build()
            .expect("valid layer");
        // Smallest input that still gives an output, plus some slack.
        let eff_h = (self.kh - 1) * self.dilation.0 + 1;
        let eff_w = (self.kw - 1) * self.dilation.1 + 1;
        let h = eff_h.saturating_sub(self.padding.top + self.padding.bottom).max(1) + self.extra.0;
        let w = eff_w.saturating_sub(self.padding.left + self.padding.right).max(1) + self.extra.1;
        let input = Tensor4::new(rng.vec(self.batch * c * h * w), [self.batch, c, h, w]).unwrap();
        (layer, input)
    }
}
