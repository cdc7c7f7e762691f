//! The `dac` command-line tool: inspect checkpoints, convert checkpoints, rewrite ONNX models.
//!
//! A thin layer over [`dac::io`] and [`dac::convert`]: flags become options ([`args`]), then a
//! progress bar, tables and JSON ([`table`]).

mod args;
mod inspect;
mod moments;
mod table;

use args::ConversionArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};
use dac::convert::{FloatDtype, Layout};
use dac::io::{self, Phase};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "dac",
    version,
    about = "Data-free conversion of trained convolutions into depthwise + pointwise pairs",
    after_help = "Examples:\n  \
        dac inspect resnet18.safetensors --input 224x224\n  \
        dac convert vgg16.safetensors -o vgg16-dac.safetensors --energy 0.9 --skip features.0\n  \
        dac convert model.safetensors -o out.safetensors --rank 2 --rank-for 'layer4.*'=1 --json\n  \
        dac onnx net.onnx -o net-dac.onnx --speedup 2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Lists every convolution: shape, groups, ranks, retained energy at r = 1..5, MACs.
    #[command(after_help = "Examples:\n  \
        dac inspect model.safetensors\n  \
        dac inspect model.safetensors --input 224x224 --groups 'features.*'=1 --json")]
    Inspect(inspect::InspectArgs),
    /// Converts convolutions into depthwise + pointwise pairs and writes a new checkpoint.
    #[command(after_help = "Each converted layer `<layer>.weight` / `.bias` becomes\n  \
        <layer>.depthwise.weight  [C*r, 1, kh, kw]   (groups = C, no bias)\n  \
        <layer>.pointwise.weight  [N, C*r/groups, 1, 1]\n  \
        <layer>.pointwise.bias    [N]   (if the layer had a bias)\n\
        and the metadata key `dac.layer.<layer>` records rank, groups and split.\n\n\
        Examples:\n  \
        dac convert in.safetensors -o out.safetensors --rank 2\n  \
        dac convert in.safetensors -o out.safetensors --energy 0.95 --input 224x224 --skip 'conv1'\n  \
        dac convert in.safetensors -o out.safetensors --rank 3 --rank-for 'layer1.*'=2 --groups dw=32 --force\n  \
        dac convert in.safetensors -o out.safetensors --rank 2 --svd nalgebra --f64\n  \
        dac convert in.safetensors -o out.safetensors --rank 3 --fit correlated=0.7\n  \
        dac convert in.safetensors -o out.safetensors --speedup 2 --input 32x32 --layer-input 'features.1?'=2x2")]
    Convert(ConvertArgs),
    /// Rewrites an ONNX model: each selected Conv becomes the Convs of its scheme (DAC's: a
    /// depthwise Conv and a 1x1 Conv).
    #[command(after_help = "Examples:\n  \
        dac onnx net.onnx -o net-dac.onnx --speedup 2\n  \
        dac onnx net.onnx -o net-dac.onnx --energy 0.95 --skip 'features.0' --json\n  \
        dac onnx net.onnx -o net-dac.onnx --rank 2 --layout multiplier1 --force")]
    Onnx(OnnxArgs),
}

#[derive(Args)]
struct ConvertArgs {
    /// The checkpoint to convert (never modified).
    input: PathBuf,
    #[command(flatten)]
    conversion: ConversionArgs,
    /// Write converted tensors in this dtype (default: the layer's own).
    #[arg(long, value_enum)]
    dtype: Option<DtypeArg>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("uses_ort").multiple(true).args(["measure", "synthetic_moments"])))]
struct OnnxArgs {
    /// The ONNX model to rewrite (never modified).
    #[arg(value_name = "IN.onnx")]
    model: PathBuf,
    #[command(flatten)]
    conversion: ConversionArgs,
    /// Node layout of factored layers: `auto` (each layer's fastest by the time model),
    /// `multiplier1` (r depthwise Convs of multiplier 1 and a Concat), `sum` (r depthwise + 1x1
    /// branches added, no Concat) or `fused` (one depthwise Conv with multiplier r).
    #[arg(long, value_enum, default_value = "auto")]
    layout: LayoutArg,
    /// Convert Conv weights that the model also lists as graph inputs (replaceable at run
    /// time, so left dense by default; old exporters list every initializer as an input):
    /// treat them as constants; the replaced weights leave the output's inputs.
    #[arg(long)]
    freeze_input_weights: bool,
    /// Time the original and the rewrite in onnxruntime on this machine (--threads threads,
    /// batch 1) and report the measured speed-up; with --speedup X, re-plan (up to 5 plans)
    /// until the measured speed-up reaches 2 % above X, write the plan that does with the least
    /// reduction, and claim its speed-up timed again in a fresh pair (going on from it while
    /// plans remain if that falls below X). Needs onnxruntime's shared library: --ort-library
    /// or ORT_DYLIB_PATH.
    #[arg(long)]
    measure: bool,
    /// onnxruntime's shared library for --measure and --synthetic-moments, e.g. the Python
    /// wheel's `onnxruntime/capi/libonnxruntime.so.1.32.0`. Default: the ORT_DYLIB_PATH variable.
    #[arg(long, value_name = "FILE", requires = "uses_ort")]
    ort_library: Option<PathBuf>,
    #[command(flatten)]
    moments: moments::MomentArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    F32,
    F64,
    F16,
    Bf16,
}

/// `--layout`.
#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    Auto,
    Fused,
    Multiplier1,
    Sum,
}

impl LayoutArg {
    /// The forced layout, `None` for `auto`.
    fn layout(self) -> Option<Layout> {
        match self {
            Self::Auto => None,
            Self::Fused => Some(Layout::Fused),
            Self::Multiplier1 => Some(Layout::Multiplier1),
            Self::Sum => Some(Layout::Sum),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => inspect::run(&a),
        Command::Convert(a) => convert(&a),
        Command::Onnx(a) => onnx(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The flag a [`ConvertOptions`](dac::ConvertOptions) setter is given by.
fn flag(option: &str) -> &str {
    match option {
        "include" => "--layers",
        "exclude" => "--skip",
        "rank_for" => "--rank-for",
        "scheme_for" => "--scheme",
        "groups" => "--groups",
        "layer_input" => "--layer-input",
        "linear_positions" => "--geometry `positions`",
        other => other,
    }
}

/// An error's message in the command line's terms: option names become flags.
fn describe(e: &dac::Error) -> String {
    match e {
        dac::Error::NoMatch { file, option, pattern, available } => format!(
            "{}: {} pattern `{pattern}` matches no {} layer (layers: {available})",
            file.display(),
            flag(option),
            if *option == "linear_positions" { "linear" } else { "convolution" }
        ),
        dac::Error::InFile { file, source } => format!("{}: {}", file.display(), describe(source)),
        dac::Error::UnknownInputSize { layer, reason } => {
            // A graph node (not a convolution) has no size to declare: only the input's helps.
            let (what, or_layer) = if layer.starts_with("node ") {
                (layer.clone(), String::new())
            } else {
                (format!("layer `{layer}`"), format!(", or --layer-input {layer}=HxW"))
            };
            format!(
                "{what}: input size unknown ({reason}); every layer is counted at its real size: give --input \
                 HxW{or_layer}"
            )
        }
        dac::Error::SchemeNeedsPlanner { layer } => format!(
            "layer `{layer}`: --scheme auto lets the planner choose the scheme; use it with --speedup or --macs (and no \
             --rank-for for this layer), or name one scheme (dac, spatial, channel, decoupled)"
        ),
        dac::Error::TargetNotMet { target, reached, max } => format!(
            "plan: target {target} cannot be reached; the cheapest plan reaches {reached:.2}x (at most {max:.2}x \
             possible); nothing was written (without --require-target the cheapest plan is written)"
        ),
        dac::Error::OutputExists { path } => {
            format!("{}: output file already exists; use --force to replace it", path.display())
        }
        other => other.to_string(),
    }
}

fn convert(a: &ConvertArgs) -> dac::Result<()> {
    let mut o = a.conversion.options_with_geometry()?;
    if let Some(d) = a.dtype {
        o = o.output_dtype(match d {
            DtypeArg::F32 => FloatDtype::F32,
            DtypeArg::F64 => FloatDtype::F64,
            DtypeArg::F16 => FloatDtype::F16,
            DtypeArg::Bf16 => FloatDtype::BF16,
        });
    }
    let c = &a.conversion;
    let bar = Bar::new(!c.quiet && std::io::stderr().is_terminal());
    let result = io::convert_file_with(&a.input, &c.output, &o, &mut |p| bar.update(p));
    bar.finish();
    let summary = result?;
    table::report(&summary, c.json, c.quiet, false);
    c.note_other_cpu(&summary);
    Ok(())
}

fn onnx(a: &OnnxArgs) -> dac::Result<()> {
    let c = &a.conversion;
    let mut o = c.options_with_geometry()?;
    if let Some(l) = a.layout.layout() {
        o = o.layout(l);
    }
    o = o.freeze_input_weights(a.freeze_input_weights);
    a.moments.check_save(&a.model, &c.output, c.force)?;
    let mut runtime = if a.measure || a.moments.synthetic_moments { Some(load_ort(a)?) } else { None };
    let mut moments = None;
    if let (true, Some(rt)) = (a.moments.synthetic_moments, runtime.as_mut()) {
        let m = a.moments.measure(&a.model, &o, rt, c.quiet || c.json)?;
        // A copy only to save (a 224x224 model's moments take gigabytes).
        moments = a.moments.saves().then(|| m.clone());
        o = o.input_moments(m);
    }
    let (summary, measured) = match (a.measure, runtime) {
        (true, Some(mut rt)) => {
            let (s, m) = io::onnx::rewrite_file_measured(&a.model, &c.output, &o, &mut rt)?;
            (s, Some(m))
        }
        _ => (io::onnx::rewrite_file(&a.model, &c.output, &o)?, None),
    };
    if let Some(m) = &moments {
        a.moments.save(m, &c.output, c.force)?;
    }
    table::report_measured(&summary, measured.as_ref(), c.json, c.quiet, true);
    if measured.is_none() {
        c.note_other_cpu(&summary);
    }
    Ok(())
}

/// onnxruntime's shared library from --ort-library or ORT_DYLIB_PATH, loaded.
fn load_ort(a: &OnnxArgs) -> dac::Result<dac::runtime::OnnxRuntime> {
    let library = a.ort_library.clone().or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from));
    let Some(library) = library else {
        let flag = if a.measure { "--measure" } else { "--synthetic-moments" };
        return Err(dac::Error::Runtime {
            runtime: "onnxruntime".into(),
            reason: format!(
                "{flag} needs onnxruntime's shared library: give --ort-library FILE or set ORT_DYLIB_PATH \
                 (pip's onnxruntime wheel has it: onnxruntime/capi/libonnxruntime.so.*)"
            ),
        });
    };
    let c = &a.conversion;
    dac::runtime::OnnxRuntime::load(&library, c.threads, c.input_size)
}

/// A progress bar that stays hidden until the run has taken half a second, and only on a
/// terminal.
struct Bar {
    bar: ProgressBar,
    may_draw: bool,
    start: Instant,
    shown: std::cell::Cell<bool>,
}

impl Bar {
    fn new(may_draw: bool) -> Self {
        let bar = ProgressBar::hidden();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg:30!} [{bar:30}] {percent:>3}% {elapsed}") {
            bar.set_style(style.progress_chars("=> "));
        }
        Self { bar, may_draw, start: Instant::now(), shown: std::cell::Cell::new(false) }
    }
    fn update(&self, p: &io::Progress<'_>) {
        if self.may_draw && !self.shown.get() && self.start.elapsed() > Duration::from_millis(500) {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.shown.set(true);
        }
        self.bar.set_length(p.total.max(1));
        self.bar.set_position(p.done);
        let verb = if p.phase == Phase::Analysing { "analysing" } else { "writing" };
        self.bar.set_message(format!("{verb} {}", p.item));
    }
    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
