//! `dac inspect`.

use super::args::{parse_assignment, parse_size, GeometryArgs, SvdArg};
use super::table::{print_table, si};
use clap::Args;
use dac::convert::Precision;
use dac::io::{self, InspectOptions, LayerInfo};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
    /// The checkpoint (safetensors) or ONNX model (`.onnx`: geometry and sizes from the graph)
    /// to read.
    model: PathBuf,
    /// Input size HxW (or N for NxN) for MAC counts; default: MACs per output position.
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    input: Option<(usize, usize)>,
    /// Declares groups for layers matching NAME (a glob); repeatable. Default 1.
    #[arg(long = "groups", value_name = "NAME=G", value_parser = parse_assignment)]
    groups: Vec<(String, usize)>,
    #[command(flatten)]
    geometry: GeometryArgs,
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

/// What an ONNX model's counts rest on (the checkpoint's is [`io::ASSUMPTION`]).
const ONNX_NOTE: &str = "stride, padding, dilation and groups from the graph's nodes; input sizes by shape inference \
     from the model's input (or --input, or --geometry's sizes); the total counts convolutions only";

pub fn run(a: &InspectArgs) -> dac::Result<()> {
    let mut o =
        InspectOptions::new().precision(if a.f64 { Precision::F64 } else { Precision::F32 }).svd(a.svd.method());
    for (p, g) in &a.groups {
        o = o.groups(p.clone(), *g);
    }
    let sidecar = a.geometry.sidecar()?;
    if let Some((h, w)) = a.input.or(sidecar.input) {
        o = o.input_size(h, w);
    }
    for l in sidecar.layers.iter().chain(&a.geometry.declarations()) {
        o = o.declare(l);
    }
    let layers = io::inspect_file(&a.model, &o)?;
    let onnx = a.model.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    let note = if onnx { ONNX_NOTE } else { io::ASSUMPTION };
    if a.json {
        let doc = json!({
            "file": a.model.display().to_string(),
            "input_size": a.input.map(|(h, w)| [h, w]),
            "assumptions": note,
            "layers": layers.iter().map(layer_json).collect::<Vec<_>>(),
            "total_macs": layers.iter().map(|l| l.cost.macs).sum::<u64>(),
        });
        println!("{doc:#}");
        return Ok(());
    }
    let size = if layers.iter().any(|l| l.input_size.is_some()) { "MACs" } else { "MACs/position" };
    let head = ["layer", "shape", "groups", "max rank", "break-even", "energy r=1", "r=2", "r=3", "r=4", "r=5"];
    let assumed = ["stride", "padding", "dilation", "input"];
    let mut rows = vec![head.iter().chain([&size]).chain(&assumed).map(|s| s.to_string()).collect::<Vec<_>>()];
    for l in &layers {
        let mut row = vec![
            l.name.clone(),
            format!("{:?}", l.dims),
            l.groups.to_string(),
            l.max_rank.to_string(),
            format!("{:.2}", l.break_even),
        ];
        row.extend((0..5).map(|r| l.retained_energy.get(r).map_or("-".to_string(), |e| format!("{e:.4}"))));
        row.push(si(l.cost.macs));
        row.extend(assumed_geometry(l));
        rows.push(row);
    }
    print_table(&rows);
    let total = si(layers.iter().map(|l| l.cost.macs).sum::<u64>());
    println!("{} convolution(s), {total} MACs in total; {note}", layers.len());
    Ok(())
}

/// What the cost of `l` assumes: stride, padding (t,b,l,r), dilation, and its input size with
/// where it came from.
fn assumed_geometry(l: &LayerInfo) -> [String; 4] {
    let g = &l.geometry;
    let p = g.padding;
    let input = match l.input_size {
        Some((h, w)) => format!("{h}x{w} ({})", l.size.as_str()),
        None => "-".to_string(),
    };
    [
        format!("{}x{}", g.stride.0, g.stride.1),
        format!("{},{},{},{}", p.top, p.bottom, p.left, p.right),
        format!("{}x{}", g.dilation.0, g.dilation.1),
        input,
    ]
}

fn layer_json(l: &LayerInfo) -> serde_json::Value {
    let p = l.geometry.padding;
    json!({
        "stride": [l.geometry.stride.0, l.geometry.stride.1],
        "padding": [p.top, p.bottom, p.left, p.right],
        "dilation": [l.geometry.dilation.0, l.geometry.dilation.1],
        "input_size": l.input_size,
        "size": l.size.as_str(),
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
