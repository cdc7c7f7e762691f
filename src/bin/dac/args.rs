//! Command-line flags shared by `dac convert` and `dac onnx`, and their parsers; flags become
//! [`ConvertOptions`] here and nowhere else.

use clap::{Args, ValueEnum};
use dac::convert::{ConvertOptions, LayerGeometry, Precision, SchemeChoice, SvdMethod};
use dac::time::TimeModel;
use dac::{Fit, Padding, Rank, Split};
use std::path::PathBuf;

/// The flags of a conversion, for every format.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("policy").required(true).args(["rank", "energy", "speedup", "macs"])))]
#[command(group(clap::ArgGroup::new("target").args(["speedup", "macs"])))]
pub struct ConversionArgs {
    /// Where to write the result (never the input).
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
    /// Keep this many singular values per input channel (a layer whose maximum rank is below
    /// it, such as a depthwise convolution, is left dense and listed with the reason).
    #[arg(long, value_name = "R")]
    pub rank: Option<usize>,
    /// Per layer, the smallest rank retaining this fraction of its energy, in (0, 1].
    #[arg(long, value_name = "F")]
    pub energy: Option<f64>,
    /// Plan every layer (scheme, rank, layout) for a network X times faster by the time model
    /// (onnxruntime on x86-64, one thread, unless --time-table/--threads say otherwise), from
    /// the weights alone; a layer modeled no faster factored stays dense. Needs every layer's
    /// input size.
    #[arg(long, value_name = "X")]
    pub speedup: Option<f64>,
    /// Plan every layer's rank for this whole-network MAC reduction (convolutions and linear
    /// layers) instead of a modeled time; a layer whose factors are modeled no faster than it
    /// stays dense unless --allow-slower.
    #[arg(long, value_name = "X")]
    pub macs: Option<f64>,
    /// The time-model table (JSON written by bench/calibrate.py or bench/rescale_table.py) for
    /// --speedup, the layouts and the modeled times in reports. Default: the shipped
    /// onnxruntime x86-64 table measured on this kind of CPU (AVX-512: AMD EPYC of CPU family
    /// 25 or 26, Intel Xeon), else the AMD EPYC family 25 one.
    #[arg(long, value_name = "FILE")]
    pub time_table: Option<PathBuf>,
    /// Intra-op threads the runtime will use: the time model takes the table measured with
    /// the most threads not above it. The shipped 2-thread table assumes threads scale as
    /// where it was measured; where they do not, calibrate this machine's (--time-table).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,
    /// Input size HxW (or N for NxN): an ONNX model's input (default: its static shape); for a
    /// checkpoint, every layer without --layer-input. Default: MACs per output position.
    #[arg(long = "input", value_name = "HxW", value_parser = parse_size)]
    pub input_size: Option<(usize, usize)>,
    /// Input size of the layers matching NAME (a glob), for MAC counts and planning; repeatable.
    #[arg(long = "layer-input", value_name = "NAME=HxW", value_parser = parse_layer_input)]
    pub layer_input: Vec<(String, (usize, usize))>,
    /// Rank for layers matching NAME (a glob); repeatable, the last match wins.
    #[arg(long = "rank-for", value_name = "NAME=R", value_parser = parse_assignment)]
    pub rank_for: Vec<(String, usize)>,
    /// Convert only layers matching PATTERN (glob: `*`, `?`); repeatable or comma-separated.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub layers: Vec<String>,
    /// Leave layers matching PATTERN dense; repeatable or comma-separated.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Declares groups for layers matching NAME (a glob); repeatable. Default 1 (checkpoints;
    /// an ONNX graph has its own).
    #[arg(long = "groups", value_name = "NAME=G", value_parser = parse_assignment)]
    pub groups: Vec<(String, usize)>,
    #[command(flatten)]
    pub geometry: GeometryArgs,
    /// Convert layers even when they save nothing: with --rank/--energy, a rank that saves no
    /// MACs; with --macs, a layer whose factors are modeled slower than dense (by default such a
    /// layer stays dense, as --speedup always keeps it).
    #[arg(long)]
    pub allow_slower: bool,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Fail (nothing written) when no plan reaches the --speedup or --macs target; by default
    /// the cheapest plan is written and the report says the target is NOT reachable.
    #[arg(long)]
    pub require_target: bool,
    /// How much more an early layer's error counts than a late one's when --speedup or --macs
    /// plans: layer i of L scores 1 + A·(L−1−i)/(L−1) times its own. Default: 3 when a layer may
    /// take a scheme other than DAC (--scheme auto, the default, or spatial, channel,
    /// decoupled), 0 when every planned layer is DAC's. 0 scores every layer alike.
    #[arg(long, value_name = "A")]
    pub depth_weight: Option<f64>,
    /// Score each candidate of --speedup and --macs by the second moments of its layer's input
    /// patches in FILE (safetensors, one [D, D] tensor per layer named by it, D = C·kh·kw; written
    /// by scripts/synthetic_moments.py from synthetic images, no data) instead of the fit's input
    /// model: the fraction of the layer's output energy each loses for those inputs. Every
    /// planned layer needs an entry.
    #[arg(long, value_name = "FILE", requires = "target")]
    pub input_moments: Option<std::path::PathBuf>,
    /// The factorisation: `dac` (the paper's depthwise + pointwise pair), `spatial` (kh x 1 then
    /// 1 x kw), `channel` (kh x kw to r channels, then 1x1), `decoupled` (Network Decoupling:
    /// 1x1, depthwise, 1x1 sum) or `auto` (the planner picks a scheme and rank per layer; needs
    /// --speedup or --macs). Default: auto for the layers --speedup or --macs plans, dac for
    /// --rank, --energy and --rank-for. `NAME=SCHEME` sets it for layers matching NAME (a glob); repeatable, the last
    /// match wins. A 1x1 convolution is converted only where channel SVD is allowed (auto or
    /// channel): no other scheme reduces it.
    #[arg(long, value_name = "[NAME=]SCHEME", value_parser = parse_scheme)]
    pub scheme: Vec<(Option<String>, SchemeChoice)>,
    /// Where DAC's singular values go.
    #[arg(long, value_enum, default_value = "sqrt")]
    pub split: SplitArg,
    /// Which rank-r approximation: `frobenius` (the paper's: closest weights) or
    /// `correlated[=RHO]` (smallest output error for inputs whose neighbouring pixels correlate
    /// as RHO, default 0.7; errors and energies are then output errors). Applies to --rank,
    /// --energy and --speedup. Default: frobenius, or correlated=0.2 when a layer may take any
    /// scheme (--scheme auto, the default with --speedup).
    #[arg(long, value_name = "FIT", value_parser = parse_fit)]
    pub fit: Option<Fit>,
    /// Compute in f64 instead of f32.
    #[arg(long)]
    pub f64: bool,
    /// The SVD algorithm.
    #[arg(long, value_enum, default_value = "gram")]
    pub svd: SvdArg,
    /// No progress bar and no table (errors still go to stderr).
    #[arg(short, long)]
    pub quiet: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl ConversionArgs {
    /// The options these flags ask for.
    pub fn options(&self) -> ConvertOptions {
        let start = match (self.rank, self.energy, self.speedup, self.macs) {
            (Some(r), ..) => ConvertOptions::new(Rank::Fixed(r)),
            (None, Some(f), ..) => ConvertOptions::new(Rank::Energy(f)),
            (None, None, Some(x), _) => ConvertOptions::speedup(x),
            (None, None, None, Some(x)) => ConvertOptions::macs(x),
            (None, None, None, None) => unreachable!("clap requires --rank, --energy, --speedup or --macs"),
        };
        let mut o = start
            .allow_slower(self.allow_slower)
            .force(self.force)
            .require_target(self.require_target)
            .svd(self.svd.method())
            .precision(if self.f64 { Precision::F64 } else { Precision::F32 })
            .split(self.split.split());
        if let Some(fit) = self.fit {
            o = o.fit(fit);
        }
        if let Some(a) = self.depth_weight {
            o = o.depth_weight(a);
        }
        for (p, r) in &self.rank_for {
            o = o.rank_for(p.clone(), *r);
        }
        for (p, choice) in &self.scheme {
            o = match p {
                Some(p) => o.scheme_for(p.clone(), *choice),
                None => o.scheme(*choice),
            };
        }
        for p in &self.layers {
            o = o.include(p.trim());
        }
        for p in &self.skip {
            o = o.exclude(p.trim());
        }
        for (p, g) in &self.groups {
            o = o.groups(p.clone(), *g);
        }
        if let Some((h, w)) = self.input_size {
            o = o.input_size(h, w);
        }
        for (p, (h, w)) in &self.layer_input {
            o = o.layer_input(p.clone(), *h, *w);
        }
        o
    }
    /// [`options`](Self::options) with the geometry declarations (the sidecar first, then the
    /// flags, so that a flag overrides the file).
    pub fn options_with_geometry(&self) -> dac::Result<ConvertOptions> {
        let mut o = self.options().time_model(self.time_model()?);
        if let Some(path) = &self.input_moments {
            o = o.input_moments(dac::io::read_input_moments(path)?);
        }
        let sidecar = self.geometry.sidecar()?;
        if let (Some((h, w)), None) = (sidecar.input, self.input_size) {
            o = o.input_size(h, w);
        }
        for l in &sidecar.layers {
            o = o.declare(l);
        }
        for l in self.geometry.declarations() {
            o = o.declare(&l);
        }
        Ok(o)
    }
}

impl ConversionArgs {
    /// On stderr (unless --quiet): a note when a `--speedup` claim rests on a table measured
    /// on another kind of CPU than this one (`Summary::time_model_other_cpu`).
    pub fn note_other_cpu(&self, summary: &dac::convert::Summary) {
        let time_target =
            summary.plan.as_ref().is_some_and(|p| matches!(p.target, dac::plan::Target::TimeReduction(_)));
        if self.quiet || !time_target {
            return;
        }
        if let Some(why) = &summary.time_model_other_cpu {
            eprintln!(
                "note: the time table was {why}: the modeled speed-up may not be what this machine runs; \
                 `dac onnx --measure` times the plans in onnxruntime here, or calibrate a table of this CPU \
                 (bench/calibrate.py, --time-table)"
            );
        }
    }

    /// The time model `--time-table` and `--threads` ask for.
    fn time_model(&self) -> dac::Result<TimeModel> {
        match &self.time_table {
            None => TimeModel::shipped(self.threads),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| dac::Error::Io {
                    path: path.clone(),
                    action: "read",
                    source,
                })?;
                TimeModel::from_json(&path.display().to_string(), &text, self.threads)
            }
        }
    }
}

/// Geometry declarations for a checkpoint (which has none): flags and a sidecar file.
#[derive(Debug, Args)]
pub struct GeometryArgs {
    /// Declares the stride of layers matching NAME (a glob): S or SHxSW; repeatable. Default 1.
    #[arg(long = "stride", value_name = "NAME=S|SHxSW", value_parser = parse_stride)]
    pub stride: Vec<(String, (usize, usize))>,
    /// Declares the zero padding of layers matching NAME: P or T,B,L,R; repeatable. Default
    /// "same" for stride 1.
    #[arg(long = "padding", value_name = "NAME=P|T,B,L,R", value_parser = parse_padding)]
    pub padding: Vec<(String, Padding)>,
    /// Declares the dilation of layers matching NAME: D or DHxDW; repeatable. Default 1.
    #[arg(long = "dilation", value_name = "NAME=D|DHxDW", value_parser = parse_stride)]
    pub dilation: Vec<(String, (usize, usize))>,
    /// A JSON sidecar with each layer's stride, padding, dilation, groups and input size (format:
    /// `dac::io::read_geometry`; example: docs/geometry-resnet18.json). Flags override it.
    #[arg(long = "geometry", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

impl GeometryArgs {
    /// The sidecar's input size and layers (none without `--geometry`).
    pub fn sidecar(&self) -> dac::Result<dac::io::GeometryFile> {
        match &self.file {
            Some(f) => dac::io::read_geometry(f),
            None => Ok(dac::io::GeometryFile::default()),
        }
    }
    /// The flags' declarations, as patterns.
    pub fn declarations(&self) -> Vec<LayerGeometry> {
        let mut out = Vec::new();
        for (p, s) in &self.stride {
            let mut g = LayerGeometry::named(p);
            g.stride = Some(*s);
            out.push(g);
        }
        for (p, x) in &self.padding {
            let mut g = LayerGeometry::named(p);
            g.padding = Some(*x);
            out.push(g);
        }
        for (p, d) in &self.dilation {
            let mut g = LayerGeometry::named(p);
            g.dilation = Some(*d);
            out.push(g);
        }
        out
    }
}

/// `--svd`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SvdArg {
    /// Gram matrix + Jacobi eigensolver in f64 (fast).
    Gram,
    /// nalgebra's SVD of every channel matrix (slower; the reference).
    Nalgebra,
}

impl SvdArg {
    pub fn method(self) -> SvdMethod {
        match self {
            Self::Gram => SvdMethod::Gram,
            Self::Nalgebra => SvdMethod::Nalgebra,
        }
    }
}

/// `--split`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SplitArg {
    Sqrt,
    Pointwise,
    Depthwise,
}

impl SplitArg {
    fn split(self) -> Split {
        match self {
            Self::Sqrt => Split::SquareRoot,
            Self::Pointwise => Split::Pointwise,
            Self::Depthwise => Split::Depthwise,
        }
    }
}

/// `HxW` or `N` (for `NxN`), positive integers.
pub fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| match v.trim().parse::<usize>() {
        Ok(0) | Err(_) => Err(format!("`{s}` is not a size HxW with positive integers (e.g. 224x224)")),
        Ok(n) => Ok(n),
    };
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((parse(h)?, parse(w)?)),
        None => parse(s).map(|n| (n, n)),
    }
}

/// `--fit`: `frobenius`, `correlated` (ρ = 0.7) or `correlated=RHO` with `0 <= RHO < 1`.
pub fn parse_fit(s: &str) -> Result<Fit, String> {
    let expected = "expected `frobenius`, `correlated` or `correlated=RHO` with 0 <= RHO < 1";
    match s.trim() {
        "frobenius" => Ok(Fit::frobenius()),
        "correlated" => Fit::correlated(Fit::DEFAULT_RHO).map_err(|e| e.to_string()),
        other => match other.strip_prefix("correlated=") {
            Some(v) => {
                let rho = v.trim().parse::<f64>().map_err(|_| format!("`{s}`: `{v}` is not a number; {expected}"))?;
                Fit::correlated(rho).map_err(|_| format!("`{s}`: rho = {rho} is out of range; {expected}"))
            }
            None => Err(format!("`{s}`: {expected}")),
        },
    }
}

/// `NAME=HxW`.
pub fn parse_layer_input(s: &str) -> Result<(String, (usize, usize)), String> {
    let (name, size) = split_assignment(s, "NAME=HxW")?;
    Ok((name, parse_size(size)?))
}

/// `NAME=S` or `NAME=SHxSW` (stride or dilation), positive.
fn parse_stride(s: &str) -> Result<(String, (usize, usize)), String> {
    let (name, value) = split_assignment(s, "NAME=S or NAME=SHxSW")?;
    Ok((name, parse_size(value)?))
}

/// `NAME=P` or `NAME=T,B,L,R`.
fn parse_padding(s: &str) -> Result<(String, Padding), String> {
    let (name, value) = split_assignment(s, "NAME=P or NAME=T,B,L,R")?;
    let n = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("`{s}`: `{v}` is not a non-negative integer"));
    let parts: Vec<&str> = value.split(',').collect();
    match parts.as_slice() {
        [p] => Ok((name, Padding::uniform(n(p)?))),
        [t, b, l, r] => Ok((name, Padding { top: n(t)?, bottom: n(b)?, left: n(l)?, right: n(r)? })),
        _ => Err(format!("`{s}`: padding is P or T,B,L,R")),
    }
}

/// `SCHEME` or `NAME=SCHEME`.
pub fn parse_scheme(s: &str) -> Result<(Option<String>, SchemeChoice), String> {
    let (name, value) = match s.rsplit_once('=') {
        Some((n, v)) if !n.is_empty() => (Some(n.to_string()), v),
        Some(_) => return Err(format!("`{s}`: the layer name (pattern) is empty")),
        None => (None, s),
    };
    let choice = SchemeChoice::from_name(value.trim())
        .ok_or_else(|| format!("`{value}` is not a scheme (auto, dac, spatial, channel, decoupled)"))?;
    Ok((name, choice))
}

/// `NAME=VALUE` with a non-negative integer value.
pub fn parse_assignment(s: &str) -> Result<(String, usize), String> {
    let (name, value) = split_assignment(s, "NAME=VALUE")?;
    let v = value.trim().parse::<usize>().map_err(|_| format!("`{s}`: `{value}` is not a non-negative integer"))?;
    Ok((name, v))
}

fn split_assignment<'s>(s: &'s str, form: &str) -> Result<(String, &'s str), String> {
    let (name, value) = s.rsplit_once('=').ok_or_else(|| format!("`{s}` is not {form}"))?;
    if name.is_empty() {
        return Err(format!("`{s}`: the layer name (pattern) is empty"));
    }
    Ok((name.to_string(), value))
}
