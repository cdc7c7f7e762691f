//! The `dac` command-line tool: inspect and convert safetensors checkpoints.
//!
//! A thin layer over [`dac::io`]: argument parsing, a progress bar, tables and JSON.

use clap::{Args, Parser, Subcommand, ValueEnum};
use dac::io::{
    self, ConversionSummary, ConvertOptions, FloatDtype, InspectOptions, LayerInfo, Phase, Precision, SvdMethod,
};
use dac::{Fit, Rank, Split};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[path = "dac/onnx_cmd.rs"]
mod onnx_cmd;

const MAC_NOTE: &str = "MACs assume stride 1 and \"same\" padding (a checkpoint has no geometry)";

#[derive(Parser)]
#[command(
    name = "dac",
    version,
    about = "Data-free conversion of trained convolutions into depthwise + pointwise pairs",
    after_help = "Examples:\n  \
        dac inspect resnet18.safetensors --input 224x224\n  \
        dac convert vgg16.safetensors -o vgg16-dac.safetensors --energy 0.9 --skip features.0\n  \
        dac convert model.safetensors -o out.safetensors --rank 2 --rank-for 'layer4.*'=1 --json"
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
    Inspect(InspectArgs),
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
    /// Rewrites an ONNX model: each selected Conv becomes a depthwise Conv and a 1x1 Conv.
    #[command(after_help = "Examples:\n  \
        dac onnx net.onnx -o net-dac.onnx --speedup 2\n  \
        dac onnx net.onnx -o net-dac.onnx --energy 0.95 --skip 'features.0' --json\n  \
        dac onnx net.onnx -o net-dac.onnx --rank 2 --layout multiplier1 --force")]
    Onnx(onnx_cmd::OnnxArgs),
}

#[derive(Args)]
struct InspectArgs {
    /// The checkpoint to read.
    model: PathBuf,
    /// Input size HxW (or N for NxN) for MAC counts; default: MACs per output position.
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    input: Option<(usize, usize)>,
    /// Declares groups for layers matching NAME (a glob); repeatable. Default 1.
    #[arg(long = "groups", value_name = "NAME=G", value_parser = parse_assignment)]
    groups: Vec<(String, usize)>,
    /// Compute spectra in f64.
    #[arg(long)]
    f64: bool,
    /// The SVD algorithm.
    #[arg(long, value_enum, default_value = "gram")]
    svd: SvdArg,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    F32,
    F64,
    F16,
    Bf16,
}

#[derive(Clone, Copy, ValueEnum)]
enum SvdArg {
    /// Gram matrix + Jacobi eigensolver in f64 (fast).
    Gram,
    /// nalgebra's SVD of every channel matrix (slower; the reference).
    Nalgebra,
}

impl SvdArg {
    fn method(self) -> SvdMethod {
        match self {
            Self::Gram => SvdMethod::Gram,
            Self::Nalgebra => SvdMethod::Nalgebra,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum SplitArg {
    Sqrt,
    Pointwise,
    Depthwise,
}

#[derive(Args)]
struct ConvertArgs {
    /// The checkpoint to convert (never modified).
    input: PathBuf,
    /// Where to write the result.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// Keep this many singular values per input channel.
    #[arg(long, value_name = "R", required_unless_present_any = ["energy", "speedup"], conflicts_with_all = ["energy", "speedup"])]
    rank: Option<usize>,
    /// Keep the smallest rank retaining this fraction of each layer's energy, in (0, 1].
    #[arg(long, value_name = "F", conflicts_with = "speedup")]
    energy: Option<f64>,
    /// Plan every layer's rank for this whole-network MAC reduction (convolutions and linear
    /// layers), from the weights alone; needs --input (or --layer-input for every layer).
    #[arg(long, value_name = "X")]
    speedup: Option<f64>,
    /// Input size of the layers matching NAME (a glob), for MAC counts and planning; repeatable.
    /// Layers without one use --input.
    #[arg(long = "layer-input", value_name = "NAME=HxW", value_parser = parse_layer_input)]
    layer_input: Vec<(String, (usize, usize))>,
    /// Rank for layers matching NAME (a glob); repeatable, the last match wins.
    #[arg(long = "rank-for", value_name = "NAME=R", value_parser = parse_assignment)]
    rank_for: Vec<(String, usize)>,
    /// Convert only layers matching PATTERN (glob: `*`, `?`); repeatable or comma-separated.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    layers: Vec<String>,
    /// Leave layers matching PATTERN dense; repeatable or comma-separated.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    skip: Vec<String>,
    /// Declares groups for layers matching NAME (a glob); repeatable. Default 1.
    #[arg(long = "groups", value_name = "NAME=G", value_parser = parse_assignment)]
    groups: Vec<(String, usize)>,
    /// Input size HxW (or N) for MAC counts; default: MACs per output position.
    #[arg(long = "input", value_name = "HxW", value_parser = parse_size)]
    input_size: Option<(usize, usize)>,
    /// Convert layers even when their rank saves nothing.
    #[arg(long)]
    allow_slower: bool,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// Write converted tensors in this dtype (default: the layer's own).
    #[arg(long, value_enum)]
    dtype: Option<DtypeArg>,
    /// Where the singular values go.
    #[arg(long, value_enum, default_value = "sqrt")]
    split: SplitArg,
    /// Which rank-r approximation: `frobenius` (the paper's: closest weights) or
    /// `correlated[=RHO]` (smallest output error for inputs whose neighbouring pixels correlate
    /// as RHO, default 0.7; errors and energies are then output errors). Applies to --rank,
    /// --energy and --speedup.
    #[arg(long, value_name = "FIT", default_value = "frobenius", value_parser = parse_fit)]
    fit: Fit,
    /// Compute in f64 instead of f32.
    #[arg(long)]
    f64: bool,
    /// The SVD algorithm.
    #[arg(long, value_enum, default_value = "gram")]
    svd: SvdArg,
    /// No progress bar and no table (errors still go to stderr).
    #[arg(short, long)]
    quiet: bool,
    /// Print one JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
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
fn parse_fit(s: &str) -> Result<Fit, String> {
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

fn parse_layer_input(s: &str) -> Result<(String, (usize, usize)), String> {
    let (name, size) = s.rsplit_once('=').ok_or_else(|| format!("`{s}` is not NAME=HxW"))?;
    if name.is_empty() {
        return Err(format!("`{s}`: the layer name (pattern) is empty"));
    }
    Ok((name.to_string(), parse_size(size)?))
}

fn parse_assignment(s: &str) -> Result<(String, usize), String> {
    let (name, value) = s.rsplit_once('=').ok_or_else(|| format!("`{s}` is not NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("`{s}`: the layer name (pattern) is empty"));
    }
    let v = value.trim().parse::<usize>().map_err(|_| format!("`{s}`: `{value}` is not a non-negative integer"))?;
    Ok((name.to_string(), v))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(a) => inspect(a),
        Command::Convert(a) => convert(a),
        Command::Onnx(a) => onnx_cmd::run(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `1234567` -> `1.23M`.
fn si(v: u64) -> String {
    let v = v as f64;
    for (scale, suffix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if v >= scale {
            return format!("{:.2}{suffix}", v / scale);
        }
    }
    format!("{v}")
}

fn input_label(size: Option<(usize, usize)>, default: bool) -> String {
    match (size, default) {
        (Some((h, w)), true) => format!("{h}x{w} (default)"),
        (Some((h, w)), false) => format!("{h}x{w}"),
        (None, _) => "-".to_string(),
    }
}

fn size_label(size: Option<(usize, usize)>) -> String {
    match size {
        Some((h, w)) => format!("MACs ({h}x{w})"),
        None => "MACs/position".to_string(),
    }
}

/// Prints rows with each column padded to its widest cell.
fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(c, s)| format!("{s:<w$}", w = widths[c])).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn inspect(a: InspectArgs) -> dac::Result<()> {
    let mut o =
        InspectOptions::new().precision(if a.f64 { Precision::F64 } else { Precision::F32 }).svd(a.svd.method());
    for (p, g) in &a.groups {
        o = o.groups(p.clone(), *g);
    }
    if let Some((h, w)) = a.input {
        o = o.input_size(h, w);
    }
    let layers = io::inspect_file(&a.model, &o)?;
    if a.json {
        let doc = json!({
            "file": a.model.display().to_string(),
            "input_size": a.input.map(|(h, w)| [h, w]),
            "assumptions": MAC_NOTE,
            "layers": layers.iter().map(layer_json).collect::<Vec<_>>(),
            "total_macs": layers.iter().map(|l| l.cost.macs).sum::<u64>(),
        });
        println!("{doc:#}");
        return Ok(());
    }
    let mut rows = vec![vec![
        "layer".to_string(),
        "shape".into(),
        "groups".into(),
        "max rank".into(),
        "break-even".into(),
        "energy r=1".into(),
        "r=2".into(),
        "r=3".into(),
        "r=4".into(),
        "r=5".into(),
        size_label(a.input),
    ]];
    for l in &layers {
        let mut row = vec![
            l.name.clone(),
            format!("{:?}", l.dims),
            l.groups.to_string(),
            l.max_rank.to_string(),
            format!("{:.2}", l.break_even),
        ];
        for r in 0..5 {
            row.push(l.retained_energy.get(r).map_or("-".to_string(), |e| format!("{e:.4}")));
        }
        row.push(si(l.cost.macs));
        rows.push(row);
    }
    print_table(&rows);
    println!(
        "{} convolution(s), {} MACs in total; {MAC_NOTE}",
        layers.len(),
        si(layers.iter().map(|l| l.cost.macs).sum::<u64>())
    );
    Ok(())
}

fn layer_json(l: &LayerInfo) -> serde_json::Value {
    json!({
        "name": l.name,
        "shape": l.dims,
        "dtype": l.dtype,
        "groups": l.groups,
        "bias": l.has_bias,
        "max_rank": l.max_rank,
        "break_even_rank": l.break_even,
        "retained_energy": l.retained_energy,
        "macs": l.cost.macs,
        "params": l.cost.params,
    })
}

fn convert(a: ConvertArgs) -> dac::Result<()> {
    let start_options = match (a.rank, a.energy, a.speedup) {
        (Some(r), _, _) => ConvertOptions::new(Rank::Fixed(r)),
        (None, Some(f), _) => ConvertOptions::new(Rank::Energy(f)),
        (None, None, Some(x)) => ConvertOptions::speedup(x),
        (None, None, None) => unreachable!("clap requires --rank, --energy or --speedup"),
    };
    let mut o = start_options
        .allow_slower(a.allow_slower)
        .force(a.force)
        .svd(a.svd.method())
        .fit(a.fit)
        .precision(if a.f64 { Precision::F64 } else { Precision::F32 })
        .split(match a.split {
            SplitArg::Sqrt => Split::SquareRoot,
            SplitArg::Pointwise => Split::Pointwise,
            SplitArg::Depthwise => Split::Depthwise,
        });
    if let Some(d) = a.dtype {
        o = o.output_dtype(match d {
            DtypeArg::F32 => FloatDtype::F32,
            DtypeArg::F64 => FloatDtype::F64,
            DtypeArg::F16 => FloatDtype::F16,
            DtypeArg::Bf16 => FloatDtype::BF16,
        });
    }
    for (p, r) in &a.rank_for {
        o = o.rank_for(p.clone(), *r);
    }
    for p in &a.layers {
        o = o.include(p.clone());
    }
    for p in &a.skip {
        o = o.exclude(p.clone());
    }
    for (p, g) in &a.groups {
        o = o.groups(p.clone(), *g);
    }
    if let Some((h, w)) = a.input_size {
        o = o.input_size(h, w);
    }
    for (p, (h, w)) in &a.layer_input {
        o = o.layer_input(p.clone(), *h, *w);
    }

    // The bar stays hidden until the run has taken half a second, and only on a terminal.
    let bar = ProgressBar::hidden();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg:30!} [{bar:30}] {percent:>3}% {elapsed}") {
        bar.set_style(style.progress_chars("=> "));
    }
    let may_draw = !a.quiet && std::io::stderr().is_terminal();
    let start = Instant::now();
    let mut shown = false;
    let mut on_progress = |p: &io::Progress<'_>| {
        if may_draw && !shown && start.elapsed() > Duration::from_millis(500) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            shown = true;
        }
        bar.set_length(p.total.max(1));
        bar.set_position(p.done);
        let verb = match p.phase {
            Phase::Analysing => "analysing",
            _ => "writing",
        };
        bar.set_message(format!("{verb} {}", p.item));
    };
    let result = match a.svd {
        SvdArg::Gram => io::convert_file_with(&a.input, &a.output, &o, &dac::svd::GramSvd::default(), &mut on_progress),
        SvdArg::Nalgebra => {
            io::convert_file_with(&a.input, &a.output, &o, &dac::svd::NalgebraSvd::default(), &mut on_progress)
        }
    };
    bar.finish_and_clear();
    let summary = result?;
    if a.json {
        println!("{:#}", summary_json(&summary));
    } else if !a.quiet {
        print_summary(&summary);
    }
    Ok(())
}

fn summary_json(s: &ConversionSummary) -> serde_json::Value {
    json!({
        "input": s.input.display().to_string(),
        "output": s.output.display().to_string(),
        "input_size": s.input_size.map(|(h, w)| [h, w]),
        "assumptions": MAC_NOTE,
        "converted": s.converted.iter().map(|l| json!({
            "name": l.name,
            "shape": l.dims,
            "groups": l.groups,
            "rank": l.rank,
            "max_rank": l.max_rank,
            "retained_energy": l.retained_energy,
            "relative_error": l.relative_error,
            "dtype": l.dtype.name(),
            "macs_before": l.before.macs,
            "macs_after": l.after.macs,
            "params_before": l.before.params,
            "params_after": l.after.params,
            "input_size": l.input_size.map(|(h, w)| [h, w]),
            "default_input": l.default_input,
        })).collect::<Vec<_>>(),
        "skipped": s.skipped.iter().map(|l| json!({
            "name": l.name,
            "shape": l.dims,
            "groups": l.groups,
            "reason": l.reason.to_string(),
            "macs": l.cost.macs,
            "input_size": l.input_size.map(|(h, w)| [h, w]),
            "default_input": l.default_input,
        })).collect::<Vec<_>>(),
        "copied_tensors": s.copied_tensors,
        "svd": s.svd,
        "fit": s.fit.to_string(),
        "linear_macs": s.linear.macs,
        "plan": s.plan.as_ref().map(|p| json!({
            "target_mac_reduction": match p.target { dac::plan::Target::MacReduction(x) => Some(x), _ => None },
            "met": p.met,
            "max_reduction": p.max_reduction,
            "reduction": p.reduction(),
            "macs_before": p.before.macs,
            "macs_after": p.after.macs,
            "layers": p.layers.iter().map(|l| json!({
                "name": l.name,
                "rank": l.rank,
                "retained_energy": l.retained_energy,
                "score": l.score,
            })).collect::<Vec<_>>(),
        })),
        "total": {
            "macs_before": s.macs_before(),
            "macs_after": s.macs_after(),
            "reduction": s.reduction(),
        },
    })
}

fn print_summary(s: &ConversionSummary) {
    let mut rows = vec![vec![
        "layer".to_string(),
        "rank".into(),
        "rel. error".into(),
        "MACs before -> after".to_string(),
        "reduction".into(),
        "input".into(),
    ]];
    for l in &s.converted {
        rows.push(vec![
            l.name.clone(),
            format!("{}/{}", l.rank, l.max_rank),
            format!("{:.3e}", l.relative_error),
            format!("{} -> {}", si(l.before.macs), si(l.after.macs)),
            format!("{:.2}x", l.before.macs as f64 / l.after.macs.max(1) as f64),
            input_label(l.input_size, l.default_input),
        ]);
    }
    if s.converted.is_empty() {
        println!("no layer converted");
    } else {
        print_table(&rows);
    }
    if !s.skipped.is_empty() {
        println!();
        println!("left dense:");
        let rows: Vec<Vec<String>> = s
            .skipped
            .iter()
            .map(|l| {
                vec![
                    format!("  {}", l.name),
                    format!("{:?}", l.dims),
                    l.reason.to_string(),
                    input_label(l.input_size, l.default_input),
                ]
            })
            .collect();
        print_table(&rows);
    }
    println!();
    if let Some(p) = &s.plan {
        let target = match p.target {
            dac::plan::Target::MacReduction(x) => format!("{x}x fewer MACs"),
            dac::plan::Target::ParamBudget(b) => format!("at most {b} parameters"),
            _ => "a target".to_string(),
        };
        println!();
        if p.met {
            println!("plan: target {target} met: {:.2}x (data-free planner, weights only)", p.reduction());
        } else {
            println!(
                "plan: target {target} NOT reachable; the cheapest plan reaches {:.2}x (at most {:.2}x possible)",
                p.reduction(),
                p.max_reduction
            );
        }
    }
    let defaults =
        s.converted.iter().filter(|l| l.default_input).count() + s.skipped.iter().filter(|l| l.default_input).count();
    if defaults > 0 {
        println!("{defaults} layer(s) used the default --input size (marked `default`); set --layer-input NAME=HxW where pooling or strides shrink the maps");
    }
    match s.fit.rho() {
        None => println!("fit: frobenius (closest weights; rel. error is the relative weight error)"),
        Some(rho) => println!(
            "fit: correlated, rho = {rho} (smallest output error for inputs whose neighbouring pixels correlate as \
             rho; rel. error and energies are relative output errors under that model)"
        ),
    }
    println!(
        "total: {} -> {} MACs over all convolutions and linear layers ({:.2}x); {MAC_NOTE}",
        si(s.macs_before()),
        si(s.macs_after()),
        s.reduction()
    );
    println!("wrote {}", s.output.display());
}
