//! The shipped networks of `models/` in Rust, for `dac`'s example, tests and research harness
//! (not published): the `ops` list of `S.json`, the weights of `S.safetensors`, the
//! Fashion-MNIST test images, a batched forward pass whose convolutions run through `dac`'s
//! executor (a decomposed layer runs as its real depthwise + pointwise pair), and an
//! [`Evaluator`] that measures the accuracy of a rank assignment from the dense activations
//! entering its first decomposed layer.
//!
//! Used by `examples/paper.rs`, `research/` (`dac-research`) and, as `net`, by the tests that run
//! the shipped networks.

mod eval;
pub mod rescore;

pub use eval::{masked, Evaluator, Ranks};

use dac::exec::Tensor4;
use dac::{Conv2dWeights, DepthwiseR, Padding, Pointwise};
use rayon::prelude::*;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Any error of the example, as text.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn err<T>(msg: impl Into<String>) -> Res<T> {
    Err(msg.into().into())
}

/// The repository root (where `models/` and `data/` live): the parent of this crate's directory.
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// One step of the forward pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Convolution number `i` (forward order) followed by nothing; ReLU is its own op.
    Conv(usize),
    Relu,
    MaxPool {
        kernel: usize,
        stride: usize,
    },
    AvgPoolGlobal,
    Flatten,
    /// Linear layer number `j`.
    Linear(usize),
}

/// A fully connected layer, weight `[out, in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub name: String,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub out_features: usize,
    pub in_features: usize,
}

/// A loaded network.
#[derive(Debug, Clone)]
pub struct Net {
    pub name: String,
    pub ops: Vec<Op>,
    pub convs: Vec<Conv2dWeights<f32>>,
    pub linears: Vec<Linear>,
    /// `[C, H, W]` of one input image.
    pub input: [usize; 3],
    /// The `S.json` document (accuracy metadata).
    pub meta: serde_json::Value,
    /// `(height, width)` of every convolution's input.
    pub conv_inputs: Vec<(usize, usize)>,
    /// Op index of every convolution.
    pub conv_ops: Vec<usize>,
}

/// A decomposed convolution: the pair that replaces it.
#[derive(Debug, Clone)]
pub struct Pair {
    pub depthwise: DepthwiseR<f32>,
    pub pointwise: Pointwise<f32>,
}

/// What can stand in for a dense convolution: DAC's [`Pair`] (run by the fast pair executor)
/// or any scheme's chain of factor convolutions ([`Chain`]).
pub trait Replace: Sync {
    /// The replacement applied to `x`.
    fn apply(&self, x: &Tensor4<f32>) -> Res<Tensor4<f32>>;
}

impl Replace for Pair {
    fn apply(&self, x: &Tensor4<f32>) -> Res<Tensor4<f32>> {
        conv_pair(x, self)
    }
}

/// A chain of factor convolutions (`Factored::factors` of any `dac::scheme`), run in order.
#[derive(Debug, Clone)]
pub struct Chain(pub Vec<Conv2dWeights<f32>>);

impl Replace for Chain {
    fn apply(&self, x: &Tensor4<f32>) -> Res<Tensor4<f32>> {
        let mut y = conv(x, &self.0[0])?;
        for f in &self.0[1..] {
            y = conv(&y, f)?;
        }
        Ok(y)
    }
}

/// The scheme of `kind` with `fit` (DAC through `svd`).
pub fn scheme_of<'b>(
    kind: dac::scheme::SchemeKind,
    fit: dac::Fit,
    svd: &'b dac::svd::NalgebraSvd,
) -> Box<dyn dac::scheme::Scheme<f32> + 'b> {
    use dac::scheme::{Channel, Dac, Decoupled, SchemeKind, Spatial};
    match kind {
        SchemeKind::Spatial => Box::new(Spatial::new().fit(fit)),
        SchemeKind::Channel => Box::new(Channel::new().fit(fit)),
        SchemeKind::Decoupled => Box::new(Decoupled::new().fit(fit)),
        _ => Box::new(Dac::new(svd).fit(fit)),
    }
}

/// A scheme's letter in the research harness's plan summaries: `d` DAC, `s` spatial SVD, `c`
/// channel SVD, `n` Network Decoupling.
pub fn scheme_letter(kind: dac::scheme::SchemeKind) -> &'static str {
    use dac::scheme::SchemeKind;
    match kind {
        SchemeKind::Spatial => "s",
        SchemeKind::Channel => "c",
        SchemeKind::Decoupled => "n",
        _ => "d",
    }
}

/// A plan as the research harness prints it: per layer `-` (dense) or the scheme's
/// [`scheme_letter`] and the rank.
pub fn plan_summary(plan: &dac::plan::Plan) -> String {
    let each: Vec<String> = plan
        .layers
        .iter()
        .map(|l| match (l.scheme, l.rank) {
            (Some(k), Some(r)) => format!("{}{r}", scheme_letter(k)),
            _ => "-".to_string(),
        })
        .collect();
    each.join(" ")
}

/// No replacement at all (for the dense network's passes).
pub const DENSE: &[Option<&Pair>] = &[];

/// Tensor name -> (shape, values).
pub type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads a safetensors file with F32 tensors: 8-byte little-endian header length, JSON header,
/// raw data. Returns name -> (shape, values).
pub fn read_safetensors(path: &Path) -> Res<Tensors> {
    let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if raw.len() < 8 {
        return err(format!("{}: too short for a safetensors header", path.display()));
    }
    let n = u64::from_le_bytes(raw[..8].try_into()?) as usize;
    let header_end = 8usize.checked_add(n).filter(|&e| e <= raw.len()).ok_or("header length beyond the file")?;
    let header: serde_json::Value = serde_json::from_slice(&raw[8..header_end])?;
    let data = &raw[header_end..];
    let mut out = HashMap::new();
    for (name, info) in header.as_object().ok_or("header is not a JSON object")? {
        if name == "__metadata__" {
            continue;
        }
        if info["dtype"] != "F32" {
            return err(format!("{name}: dtype {} (only F32 is read)", info["dtype"]));
        }
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone())?;
        let offs: [usize; 2] = serde_json::from_value(info["data_offsets"].clone())?;
        if offs[0] > offs[1] || offs[1] > data.len() || (offs[1] - offs[0]) != 4 * shape.iter().product::<usize>() {
            return err(format!("{name}: bad data_offsets {offs:?} for shape {shape:?}"));
        }
        let values =
            data[offs[0]..offs[1]].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        out.insert(name.clone(), (shape, values));
    }
    Ok(out)
}

/// Reads a gzip-compressed idx file of unsigned bytes: returns (dims, data).
pub fn read_idx_gz(path: &Path) -> Res<(Vec<usize>, Vec<u8>)> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(file).read_to_end(&mut raw)?;
    if raw.len() < 4 || raw[0] != 0 || raw[1] != 0 || raw[2] != 0x08 {
        return err(format!("{}: not an unsigned-byte idx file", path.display()));
    }
    let ndim = raw[3] as usize;
    let mut dims = Vec::with_capacity(ndim);
    for d in 0..ndim {
        let b = raw.get(4 + 4 * d..8 + 4 * d).ok_or("truncated idx header")?;
        dims.push(u32::from_be_bytes(b.try_into()?) as usize);
    }
    let data = raw[4 + 4 * ndim..].to_vec();
    if data.len() != dims.iter().product::<usize>() {
        return err(format!("{}: {} bytes for dims {dims:?}", path.display(), data.len()));
    }
    Ok((dims, data))
}

/// Fashion-MNIST images (the test set unless loaded by [`Dataset::load_split`]), as the networks
/// see them: `pixel / 255`, zero-padded to 32x32.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `count x 1 x 32 x 32`, NCHW.
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    /// Index of each image in its file.
    pub index: Vec<usize>,
}

impl Dataset {
    /// Loads `data/fashion-mnist/t10k-*`.
    pub fn load_test(dir: &Path) -> Res<Self> {
        Self::load_split(dir, "t10k")
    }

    /// Loads `<dir>/<split>-images-idx3-ubyte.gz` and its labels (`split`: `t10k` or `train`;
    /// the training images are not shipped, see `/usr/share/datasets/fashion-mnist/`).
    pub fn load_split(dir: &Path, split: &str) -> Res<Self> {
        let (idims, pixels) = read_idx_gz(&dir.join(format!("{split}-images-idx3-ubyte.gz")))?;
        let (ldims, labels) = read_idx_gz(&dir.join(format!("{split}-labels-idx1-ubyte.gz")))?;
        if idims.len() != 3 || idims[1] != 28 || idims[2] != 28 || ldims != [idims[0]] {
            return err(format!("unexpected idx dims {idims:?} / {ldims:?}"));
        }
        let n = idims[0];
        let mut images = vec![0f32; n * 32 * 32];
        for i in 0..n {
            for y in 0..28 {
                for x in 0..28 {
                    images[i * 1024 + (y + 2) * 32 + x + 2] = pixels[i * 784 + y * 28 + x] as f32 / 255.0;
                }
            }
        }
        Ok(Self { images, labels, index: (0..n).collect() })
    }

    /// The images whose file index is listed, in that order.
    pub fn subset(&self, picks: &[usize]) -> Self {
        let mut images = Vec::with_capacity(picks.len() * 1024);
        for &i in picks {
            images.extend_from_slice(&self.images[i * 1024..(i + 1) * 1024]);
        }
        Self { images, labels: picks.iter().map(|&i| self.labels[i]).collect(), index: picks.to_vec() }
    }

    /// The first `n` images.
    pub fn first(&self, n: usize) -> Self {
        self.subset(&(0..n.min(self.len())).collect::<Vec<_>>())
    }

    /// The first `per_class` images of every class, in file order.
    pub fn stratified(&self, per_class: usize) -> Self {
        let mut seen = [0usize; 256];
        let picks: Vec<usize> = (0..self.len())
            .filter(|&i| {
                let c = self.labels[i] as usize;
                seen[c] += 1;
                seen[c] <= per_class
            })
            .collect();
        self.subset(&picks)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// No images?
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

fn usize_of(v: &serde_json::Value, what: &str) -> Res<usize> {
    v.as_u64().map(|x| x as usize).ok_or_else(|| format!("`{what}` is not a non-negative integer: {v}").into())
}

fn pair_of(v: &serde_json::Value, what: &str) -> Res<(usize, usize)> {
    Ok((usize_of(&v[0], what)?, usize_of(&v[1], what)?))
}

impl Net {
    /// Loads `stem.json` and `stem.safetensors` (for example `models/fmnist_vgg`).
    pub fn load(stem: &Path) -> Res<Self> {
        let json_path = stem.with_extension("json");
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json_path).map_err(|e| format!("{}: {e}", json_path.display()))?)?;
        let mut tensors = read_safetensors(&stem.with_extension("safetensors"))?;
        let mut take = |name: String| tensors.remove(&name).ok_or_else(|| format!("tensor `{name}` missing"));
        let input: [usize; 3] = serde_json::from_value(meta["input"].clone())?;
        let (mut ops, mut convs, mut linears) = (Vec::new(), Vec::new(), Vec::new());
        for op in meta["ops"].as_array().ok_or("`ops` is not a list")? {
            let kind = op["op"].as_str().ok_or("op without `op`")?;
            ops.push(match kind {
                "conv" => {
                    let name = op["name"].as_str().ok_or("conv without name")?.to_string();
                    let (w_shape, w) = take(format!("{name}.weight"))?;
                    let (_, b) = take(format!("{name}.bias"))?;
                    let dims: [usize; 4] = w_shape.try_into().map_err(|s| format!("{name}: weight shape {s:?}"))?;
                    let stride = pair_of(&op["stride"], "stride")?;
                    let dilation = pair_of(&op["dilation"], "dilation")?;
                    let p: Vec<usize> = serde_json::from_value(op["pad"].clone())?;
                    if p.len() != 4 {
                        return err(format!("{name}: pad {p:?}"));
                    }
                    let layer = Conv2dWeights::builder(w, dims)
                        .name(name)
                        .bias(b)
                        .groups(usize_of(&op["groups"], "groups")?)
                        .stride(stride.0, stride.1)
                        .dilation(dilation.0, dilation.1)
                        .padding(Padding { top: p[0], bottom: p[1], left: p[2], right: p[3] })
                        .build()?;
                    convs.push(layer);
                    Op::Conv(convs.len() - 1)
                }
                "relu" => Op::Relu,
                "maxpool" => Op::MaxPool {
                    kernel: usize_of(&op["kernel"], "kernel")?,
                    stride: usize_of(&op["stride"], "stride")?,
                },
                "avgpool_global" => Op::AvgPoolGlobal,
                "flatten" => Op::Flatten,
                "linear" => {
                    let name = op["name"].as_str().ok_or("linear without name")?.to_string();
                    let (w_shape, weight) = take(format!("{name}.weight"))?;
                    let (_, bias) = take(format!("{name}.bias"))?;
                    if w_shape.len() != 2 || bias.len() != w_shape[0] {
                        return err(format!("{name}: weight {w_shape:?}, bias {}", bias.len()));
                    }
                    linears.push(Linear { name, weight, bias, out_features: w_shape[0], in_features: w_shape[1] });
                    Op::Linear(linears.len() - 1)
                }
                other => return err(format!("unknown op `{other}`")),
            });
        }
        let name = meta["name"].as_str().unwrap_or("net").to_string();
        let mut net = Self { name, ops, convs, linears, input, meta, conv_inputs: Vec::new(), conv_ops: Vec::new() };
        // Trace the feature-map sizes.
        let (mut c, mut h, mut w) = (input[0], input[1], input[2]);
        for (k, op) in net.ops.iter().enumerate() {
            match *op {
                Op::Conv(i) => {
                    let l = &net.convs[i];
                    if l.shape().in_channels != c {
                        return err(format!("{}: input has {c} channels", l.name()));
                    }
                    net.conv_inputs.push((h, w));
                    net.conv_ops.push(k);
                    (h, w) = l.output_size(h, w)?;
                    c = l.shape().out_channels;
                }
                Op::Relu => {}
                Op::MaxPool { kernel, stride } => {
                    if kernel == 0 || stride == 0 || h < kernel || w < kernel {
                        return err(format!("maxpool {kernel}/{stride} on {h}x{w}"));
                    }
                    (h, w) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
                }
                Op::AvgPoolGlobal => (h, w) = (1, 1),
                Op::Flatten => (c, h, w) = (c * h * w, 1, 1),
                Op::Linear(j) => {
                    let l = &net.linears[j];
                    if l.in_features != c * h * w {
                        return err(format!("{}: {} inputs for {c}x{h}x{w}", l.name, l.in_features));
                    }
                    (c, h, w) = (l.out_features, 1, 1);
                }
            }
        }
        Ok(net)
    }

    /// Test-set correct count recorded by the training script.
    pub fn recorded_correct(&self) -> Option<usize> {
        self.meta["test_correct"].as_u64().map(|v| v as usize)
    }

    /// Whole-network MACs and parameters, with `pairs[i]` (if any) replacing conv `i`.
    pub fn cost(&self, ranks: &[Option<usize>]) -> dac::Cost {
        let convs: dac::Cost = self
            .convs
            .iter()
            .zip(&self.conv_inputs)
            .enumerate()
            .map(|(i, (l, &(h, w)))| {
                let out = l.output_size(h, w).expect("traced at load");
                match ranks.get(i).copied().flatten() {
                    Some(r) => dac::cost::pair(l.name(), &l.shape(), true, r, out).expect("small"),
                    None => dac::cost::dense(l.name(), &l.shape(), true, out).expect("small"),
                }
            })
            .sum();
        convs + self.fixed_cost()
    }

    /// MACs of conv `i` per image: its pair at `rank`, or dense.
    pub fn conv_macs(&self, i: usize, rank: Option<usize>) -> u64 {
        let (l, (h, w)) = (&self.convs[i], self.conv_inputs[i]);
        let out = l.output_size(h, w).expect("traced at load");
        let cost = match rank {
            Some(r) => dac::cost::pair(l.name(), &l.shape(), true, r, out),
            None => dac::cost::dense(l.name(), &l.shape(), true, out),
        };
        cost.expect("small").macs
    }

    /// MACs per image of every layer a pass from conv `first` on runs (convolutions at `ranks`,
    /// then the linear layers).
    pub fn macs_from(&self, ranks: &[Option<usize>], first: usize) -> u64 {
        self.macs_from_with(first, |i| self.conv_macs(i, ranks.get(i).copied().flatten()))
    }

    /// MACs per image of a pass from conv `first` on, conv `i` costing `conv(i)`, then the
    /// linear layers.
    pub fn macs_from_with(&self, first: usize, conv: impl Fn(usize) -> u64) -> u64 {
        (first..self.convs.len()).map(conv).sum::<u64>() + self.fixed_cost().macs
    }

    /// MACs per image of conv `i` replaced by `chain` (each factor at its own input size).
    pub fn chain_macs(&self, i: usize, chain: &Chain) -> u64 {
        let (mut h, mut w) = self.conv_inputs[i];
        let mut macs = 0;
        for f in &chain.0 {
            let out = f.output_size(h, w).expect("the factors compose");
            macs += dac::cost::dense(f.name(), &f.shape(), f.bias().is_some(), out).expect("small").macs;
            (h, w) = out;
        }
        macs
    }

    /// The planner's view of every convolution, factored by the paper's scheme with `fit`
    /// (nalgebra's SVD, as the recorded experiments): its errors at every rank (with the right
    /// singular vectors `Proxy::Spatial` reads), geometry and input size.
    pub fn plan_layers(&self, fit: dac::Fit) -> dac::Result<Vec<dac::plan::PlanLayer>> {
        use dac::scheme::Scheme;
        let svd = dac::svd::NalgebraSvd::default();
        let scheme = dac::scheme::Dac::new(&svd).fit(fit);
        self.convs
            .iter()
            .zip(&self.conv_inputs)
            .map(|(l, &hw)| dac::plan::PlanLayer::new(&*scheme.factor(l)?, hw))
            .collect()
    }

    /// Every convolution factored by each of `schemes` (each with its fit), as the planner
    /// sees it (`PlanLayer::with_schemes`, DAC through nalgebra's SVD as
    /// [`plan_layers`](Self::plan_layers)).
    pub fn plan_layers_with(
        &self,
        schemes: &[(dac::scheme::SchemeKind, dac::Fit)],
    ) -> dac::Result<Vec<dac::plan::PlanLayer>> {
        let svd = dac::svd::NalgebraSvd::default();
        self.convs
            .iter()
            .zip(&self.conv_inputs)
            .map(|(l, &hw)| {
                let factored = schemes
                    .iter()
                    .map(|&(k, fit)| scheme_of(k, fit, &svd).factor(l))
                    .collect::<dac::Result<Vec<_>>>()?;
                let refs: Vec<&dyn dac::scheme::Factored<f32>> = factored.iter().map(|f| &**f).collect();
                dac::plan::PlanLayer::with_schemes(&refs, hw)
            })
            .collect()
    }

    /// Conv `i` factored by `kind` with `fit` at `rank`, as a chain of convolutions.
    pub fn chain(&self, i: usize, kind: dac::scheme::SchemeKind, fit: dac::Fit, rank: usize) -> dac::Result<Chain> {
        let svd = dac::svd::NalgebraSvd::default();
        let factored = scheme_of(kind, fit, &svd).factor(&self.convs[i])?;
        let factors = factored.factors(rank, &mut dac::scheme::Workspace::new())?;
        Ok(Chain(factors.into_iter().map(|f| f.conv).collect()))
    }

    /// Cost of the linear layers.
    pub fn fixed_cost(&self) -> dac::Cost {
        self.linears.iter().map(|l| dac::cost::linear(l.out_features, l.in_features, true)).sum()
    }

    /// Runs ops `from..` on `x` (the input of op `from`), replacing conv `i` by `pairs[i]`.
    pub fn run_from<R: Replace>(&self, x: Tensor4<f32>, from: usize, pairs: &[Option<&R>]) -> Res<Tensor4<f32>> {
        self.run_range(x, from, self.ops.len(), pairs)
    }

    /// [`run_from`](Self::run_from) on a borrowed input: a convolution at `from` reads it in
    /// place (no copy of a cached activation).
    pub fn run_from_ref<R: Replace>(&self, x: &Tensor4<f32>, from: usize, pairs: &[Option<&R>]) -> Res<Tensor4<f32>> {
        self.run_range_ref(x, from, self.ops.len(), pairs)
    }

    /// [`run_range`](Self::run_range) on a borrowed input (see [`run_from_ref`](Self::run_from_ref)).
    pub fn run_range_ref<R: Replace>(
        &self,
        x: &Tensor4<f32>,
        from: usize,
        to: usize,
        pairs: &[Option<&R>],
    ) -> Res<Tensor4<f32>> {
        match self.ops.get(from) {
            Some(&Op::Conv(i)) if from < to => self.run_range(self.conv_op(x, i, pairs)?, from + 1, to, pairs),
            _ => self.run_range(x.clone(), from, to, pairs),
        }
    }

    /// Runs ops `from..to` on `x`, replacing conv `i` by `pairs[i]`.
    pub fn run_range<R: Replace>(
        &self,
        mut x: Tensor4<f32>,
        from: usize,
        to: usize,
        pairs: &[Option<&R>],
    ) -> Res<Tensor4<f32>> {
        for op in &self.ops[from..to] {
            x = match *op {
                Op::Conv(i) => self.conv_op(&x, i, pairs)?,
                Op::Relu => {
                    let mut x = x;
                    x.as_mut_slice().iter_mut().for_each(|v| *v = v.max(0.0));
                    x
                }
                Op::MaxPool { kernel, stride } => maxpool(&x, kernel, stride)?,
                Op::AvgPoolGlobal => avgpool_global(&x)?,
                Op::Flatten => {
                    let [n, c, h, w] = x.dims();
                    Tensor4::new(x.into_vec(), [n, c * h * w, 1, 1])?
                }
                Op::Linear(j) => linear(&x, &self.linears[j])?,
            };
        }
        Ok(x)
    }

    /// Conv `i` on `x`: `pairs[i]` if given, else the dense layer.
    fn conv_op<R: Replace>(&self, x: &Tensor4<f32>, i: usize, pairs: &[Option<&R>]) -> Res<Tensor4<f32>> {
        match pairs.get(i).copied().flatten() {
            Some(p) => p.apply(x),
            None => conv(x, &self.convs[i]),
        }
    }
}

/// The batches of a dataset, `batch` images each (the last may be smaller).
pub fn batches(data: &Dataset, batch: usize) -> Res<Vec<Tensor4<f32>>> {
    data.images.chunks(batch * 1024).map(|c| Ok(Tensor4::new(c.to_vec(), [c.len() / 1024, 1, 32, 32])?)).collect()
}

/// Predicted class of every image of `logits` (`[n, 10, 1, 1]`), ties to the lowest index.
pub fn argmax(logits: &Tensor4<f32>) -> Vec<u8> {
    let [_, c, h, w] = logits.dims();
    logits
        .as_slice()
        .chunks(c * h * w)
        .map(|row| {
            let mut best = 0;
            for (k, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = k;
                }
            }
            best as u8
        })
        .collect()
}

thread_local! {
    static SCRATCH: std::cell::RefCell<dac::exec::fast::Scratch<f32>> =
        std::cell::RefCell::new(dac::exec::fast::Scratch::new());
}

/// A dense convolution through the crate's fast executor (one thread: batches run in parallel).
pub fn conv(x: &Tensor4<f32>, layer: &Conv2dWeights<f32>) -> Res<Tensor4<f32>> {
    use dac::exec::fast::{conv2d, Parallelism};
    Ok(SCRATCH.with(|s| conv2d(x, layer, Parallelism::Sequential, &mut s.borrow_mut()))?)
}

/// The depthwise + pointwise pair through the crate's fast executor.
pub fn conv_pair(x: &Tensor4<f32>, p: &Pair) -> Res<Tensor4<f32>> {
    use dac::exec::fast::{pair, Parallelism};
    Ok(SCRATCH.with(|s| pair(x, &p.depthwise, &p.pointwise, Parallelism::Sequential, &mut s.borrow_mut()))?)
}

/// The reference executor (the loop nest): slow, the truth.
pub fn conv_reference(x: &Tensor4<f32>, layer: &Conv2dWeights<f32>) -> Res<Tensor4<f32>> {
    Ok(dac::exec::conv2d(x, layer)?)
}

fn maxpool(x: &Tensor4<f32>, k: usize, s: usize) -> Res<Tensor4<f32>> {
    let [n, c, h, w] = x.dims();
    let (ho, wo) = ((h - k) / s + 1, (w - k) / s + 1);
    let src = x.as_slice();
    let mut out = Vec::with_capacity(n * c * ho * wo);
    if k == 2 && s == 2 {
        // The common case, without the general loop's per-element indexing (same maxima).
        for plane in src.chunks(h * w) {
            for oy in 0..ho {
                let (top, bottom) = (&plane[2 * oy * w..][..2 * wo], &plane[(2 * oy + 1) * w..][..2 * wo]);
                let pairs = top.chunks_exact(2).zip(bottom.chunks_exact(2));
                out.extend(pairs.map(|(a, b)| f32::NEG_INFINITY.max(a[0]).max(a[1]).max(b[0]).max(b[1])));
            }
        }
        return Ok(Tensor4::new(out, [n, c, ho, wo])?);
    }
    for plane in src.chunks(h * w) {
        for oy in 0..ho {
            for ox in 0..wo {
                let mut m = f32::NEG_INFINITY;
                for dy in 0..k {
                    for dx in 0..k {
                        m = m.max(plane[(oy * s + dy) * w + ox * s + dx]);
                    }
                }
                out.push(m);
            }
        }
    }
    Ok(Tensor4::new(out, [n, c, ho, wo])?)
}

fn avgpool_global(x: &Tensor4<f32>) -> Res<Tensor4<f32>> {
    let [n, c, h, w] = x.dims();
    let out = x.as_slice().chunks(h * w).map(|p| p.iter().sum::<f32>() / (h * w) as f32).collect();
    Ok(Tensor4::new(out, [n, c, 1, 1])?)
}

fn linear(x: &Tensor4<f32>, l: &Linear) -> Res<Tensor4<f32>> {
    let [n, c, h, w] = x.dims();
    if c * h * w != l.in_features {
        return err(format!("{}: input {c}x{h}x{w}", l.name));
    }
    let mut out = Vec::with_capacity(n * l.out_features);
    for row in x.as_slice().chunks(l.in_features) {
        for o in 0..l.out_features {
            let wr = &l.weight[o * l.in_features..(o + 1) * l.in_features];
            out.push(l.bias[o] + wr.iter().zip(row).map(|(a, b)| a * b).sum::<f32>());
        }
    }
    Ok(Tensor4::new(out, [n, l.out_features, 1, 1])?)
}

/// Correct predictions and the predictions themselves, running every batch from op `from`
/// (inputs `starts[b]`), with `pairs` replacing convolutions. Batches run in parallel.
pub fn evaluate<R: Replace>(
    net: &Net,
    starts: &[Tensor4<f32>],
    from: usize,
    pairs: &[Option<&R>],
    labels: &[u8],
) -> Res<(usize, Vec<u8>)> {
    let preds: Vec<Vec<u8>> = starts
        .par_iter()
        .map(|x| -> Res<Vec<u8>> { Ok(argmax(&net.run_from_ref(x, from, pairs)?)) })
        .collect::<Res<_>>()?;
    let preds: Vec<u8> = preds.into_iter().flatten().collect();
    let correct = preds.iter().zip(labels).filter(|(p, l)| p == l).count();
    Ok((correct, preds))
}
