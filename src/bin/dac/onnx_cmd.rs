//! `dac onnx`: rewrite an ONNX model's convolutions as depthwise + pointwise pairs.

use clap::Args;
use dac::io::onnx::{rewrite_file, Layout, RewriteOptions, RewriteReport};
use dac::Rank;
use std::path::PathBuf;

/// Arguments of `dac onnx`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("policy").required(true).args(["rank", "energy", "speedup"])))]
pub struct OnnxArgs {
    /// The ONNX model to rewrite.
    #[arg(value_name = "IN.onnx")]
    pub model: PathBuf,
    /// Where to write the rewritten model (never the input).
    #[arg(short, long)]
    pub output: PathBuf,
    /// The same rank for every converted layer (a layer whose maximum rank is below it, such as
    /// a depthwise convolution, is left alone and listed with the reason).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Per layer, the smallest rank keeping this fraction of the weight energy, in (0, 1].
    #[arg(long)]
    pub energy: Option<f64>,
    /// Whole-network MAC reduction to reach; ranks from the data-free planner.
    #[arg(long)]
    pub speedup: Option<f64>,
    /// Model input size HxW (or N for NxN) for planning and MAC counts (default: the model's
    /// static input shape).
    #[arg(long = "input", value_name = "HxW", value_parser = parse_hw)]
    pub input_size: Option<(usize, usize)>,
    /// Convert only layers matching this glob (node name or weight name; repeatable).
    #[arg(long = "layers", value_name = "PATTERN", value_delimiter = ',')]
    pub layers: Vec<String>,
    /// Leave layers matching this glob alone (repeatable).
    #[arg(long = "skip", value_name = "PATTERN", value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Convert layers even when their rank saves nothing.
    #[arg(long)]
    pub allow_slower: bool,
    /// Node layout: `multiplier1` (r depthwise Convs of multiplier 1 and a Concat; faster in
    /// onnxruntime and tract) or `fused` (one depthwise Conv with multiplier r).
    #[arg(long, default_value = "multiplier1")]
    pub layout: Layout,
    /// Which rank-r approximation: `frobenius` (the paper's: closest weights) or
    /// `correlated[=RHO]` (smallest output error for inputs whose neighbouring pixels correlate
    /// as RHO, default 0.7).
    #[arg(long, value_name = "FIT", default_value = "frobenius", value_parser = super::parse_fit)]
    pub fit: dac::Fit,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Print nothing but errors.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print the report as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

fn parse_hw(s: &str) -> Result<(usize, usize), String> {
    let n = |v: &str| {
        v.trim().parse::<usize>().ok().filter(|&v| v > 0).ok_or_else(|| format!("`{s}`: expected HxW, e.g. 224x224"))
    };
    match s.split_once(['x', 'X']) {
        Some((h, w)) => Ok((n(h)?, n(w)?)),
        None => n(s).map(|v| (v, v)),
    }
}

/// Runs `dac onnx`.
pub fn run(args: &OnnxArgs) -> dac::Result<()> {
    let mut options = match (args.rank, args.energy, args.speedup) {
        (Some(r), _, _) => RewriteOptions::new(Rank::Fixed(r)),
        (_, Some(e), _) => RewriteOptions::new(Rank::Energy(e)),
        (_, _, Some(x)) => RewriteOptions::planned(x),
        _ => unreachable!("clap requires one of --rank, --energy, --speedup"),
    };
    if let Some((h, w)) = args.input_size {
        options = options.input_size(h, w);
    }
    for p in &args.layers {
        options = options.include(p.trim());
    }
    for p in &args.skip {
        options = options.exclude(p.trim());
    }
    options = options.allow_slower(args.allow_slower).layout(args.layout).fit(args.fit).force(args.force);
    let report = rewrite_file(&args.model, &args.output, &options)?;
    if args.json {
        println!("{}", report.to_json());
    } else if !args.quiet {
        print_report(&report, args);
    }
    Ok(())
}

fn print_report(r: &RewriteReport, args: &OnnxArgs) {
    for p in &r.unmatched_patterns {
        eprintln!("warning: pattern `{p}` matches no Conv");
    }
    if let Some(p) = &r.plan {
        if !p.met {
            eprintln!(
                "warning: target {:.2}x not reachable; planned {:.2}x (the most any plan reaches is {:.2}x)",
                p.target, p.reduction, p.max_reduction
            );
        }
    }
    println!("{:<32} {:>16} {:>5} {:>8} {:>9} {:>8}", "layer", "weight", "rank", "energy", "rel.err", "MACs x");
    for c in &r.converted {
        let x = match (c.before, c.after) {
            (Some(b), Some(a)) if a.macs > 0 => format!("{:.2}", b.macs as f64 / a.macs as f64),
            _ => "?".to_string(),
        };
        println!(
            "{:<32} {:>16} {:>2}/{:<2} {:>8.4} {:>9.2e} {:>8}",
            c.node,
            format!("{:?}", c.dims).replace(' ', ""),
            c.rank,
            c.max_rank,
            c.retained_energy,
            c.relative_error,
            x
        );
    }
    for s in &r.skipped {
        println!("{:<32} kept: {}", s.node, s.reason);
    }
    match (r.macs_before(), r.macs_after(), r.reduction()) {
        (Some(b), Some(a), Some(x)) => println!(
            "{} of {} Conv layers converted ({} layout); MACs {b} -> {a} ({x:.2}x, convolutions + constant-weight linear layers)",
            r.converted.len(),
            r.converted.len() + r.skipped.len(),
            r.layout.as_str()
        ),
        _ => println!(
            "{} of {} Conv layers converted ({} layout); MACs unknown (give --input HxW)",
            r.converted.len(),
            r.converted.len() + r.skipped.len(),
            r.layout.as_str()
        ),
    }
    println!("fit: {}", r.fit);
    println!("wrote {}", args.output.display());
}
