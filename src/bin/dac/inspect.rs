//! `dac inspect`.

use super::args::{parse_assignment, parse_layer_input, parse_size, GeometryArgs, SvdArg};
use super::table::{print_table, si};
use clap::Args;
use dac::convert::Precision;
use dac::io::{self, InspectOptions, Inspection, LayerInfo, OtherConv};
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
    /// Input size of the layers matching NAME (a glob), for MAC counts; repeatable.
    #[arg(long = "layer-input", value_name = "NAME=HxW", value_parser = parse_layer_input)]
    layer_input: Vec<(String, (usize, usize))>,
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

/// What a checkpoint's counts rest on.
const CHECKPOINT_NOTE: &str =
    "MACs assume stride 1 and \"same\" padding where no geometry is declared (a checkpoint has none)";

/// What an ONNX model's counts rest on.
const ONNX_NOTE: &str = "stride, padding, dilation and groups from the graph's nodes; input sizes by shape inference \
     from the model's input (or --input, --layer-input, or --geometry's sizes); the total counts convolutions only";

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
    for (p, (h, w)) in &a.layer_input {
        o = o.layer_input(p.clone(), *h, *w);
    }
    let found = io::inspect_model(&a.model, &o)?;
    let onnx = a.model.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    let note = if onnx { ONNX_NOTE } else { CHECKPOINT_NOTE };
    if a.json {
        let doc = json!({
            "file": a.model.display().to_string(),
            "input_size": a.input.map(|(h, w)| [h, w]),
            "assumptions": note,
            "layers": found.layers.iter().map(layer_json).collect::<Vec<_>>(),
            "others": found.others.iter().map(other_json).collect::<Vec<_>>(),
            "subgraph_nodes": found.subgraph_nodes,
            "other_weights": found.other_weights,
            "total_macs": found.total_macs(),
        });
        println!("{doc:#}");
        return Ok(());
    }
    print_layers(&found.layers);
    print_others(&found.others);
    print_total(&found, note);
    Ok(())
}

/// The convertible layers' table. Where only some layers have a size, the others' counts are
/// per output position and say so.
fn print_layers(layers: &[LayerInfo]) {
    if layers.is_empty() {
        return;
    }
    let sized = layers.iter().any(|l| l.input_size.is_some());
    let size = if sized { "MACs" } else { "MACs/position" };
    let head = ["layer", "shape", "groups", "max rank", "break-even", "energy r=1", "r=2", "r=3", "r=4", "r=5"];
    let assumed = ["stride", "padding", "dilation", "input"];
    let mut rows = vec![head.iter().chain([&size]).chain(&assumed).map(|s| s.to_string()).collect::<Vec<_>>()];
    for l in layers {
        let mut row = vec![
            l.name.clone(),
            format!("{:?}", l.dims),
            l.groups.to_string(),
            l.max_rank.to_string(),
            format!("{:.2}", l.break_even),
        ];
        row.extend((0..5).map(|r| l.retained_energy.get(r).map_or("-".to_string(), |e| format!("{e:.4}"))));
        let per_position = if sized && l.input_size.is_none() { "/position" } else { "" };
        row.push(format!("{}{per_position}", si(l.cost.macs)));
        row.extend(assumed_geometry(l));
        rows.push(row);
    }
    print_table(&rows);
}

/// The convolutions the converters cannot touch, when there are any.
fn print_others(others: &[OtherConv]) {
    if others.is_empty() {
        return;
    }
    println!("not convertible:");
    let mut rows = vec![["layer", "op", "MACs", "why"].map(String::from).to_vec()];
    for o in others {
        let macs = o.macs.as_ref().map_or("unknown".to_string(), |m| si(*m));
        rows.push(vec![o.name.clone(), o.op.clone(), macs, o.reason.clone()]);
    }
    print_table(&rows);
}

/// The count and total line, or why the total is unknown; the nodes whose subgraphs are not read.
fn print_total(found: &Inspection, note: &str) {
    let (layers, others) = (&found.layers, &found.others);
    let n = layers.len() + others.len();
    let of_them = if others.is_empty() { String::new() } else { format!(" ({} not convertible)", others.len()) };
    match found.total_macs() {
        Some(t) => println!("{n} convolution(s){of_them}, {} MACs in total; {note}", si(t)),
        None => {
            let unsized_layers = layers.iter().filter(|l| l.input_size.is_none()).map(|l| l.name.as_str());
            let unsized_others = others.iter().filter(|o| o.macs.is_err()).map(|o| o.name.as_str());
            let unknown: Vec<&str> = unsized_layers.chain(unsized_others).collect();
            let more = if unknown.len() > 3 { format!(" and {} more", unknown.len() - 3) } else { String::new() };
            println!(
                "{n} convolution(s){of_them}; total MACs unknown: no input size for {} of them ({}{more}); give \
                 the model's input size (--input HxW) or these layers' (--layer-input NAME=HxW); {note}",
                unknown.len(),
                unknown[..unknown.len().min(3)].join(", ")
            );
        }
    }
    if !found.subgraph_nodes.is_empty() {
        println!(
            "not read: the subgraphs of {} (convolutions inside them are neither listed nor counted)",
            found.subgraph_nodes.join(", ")
        );
    }
    super::table::print_other_weights(&found.other_weights);
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

fn other_json(o: &OtherConv) -> serde_json::Value {
    json!({
        "name": o.name,
        "op": o.op,
        "reason": o.reason,
        "macs": o.macs.as_ref().ok(),
        "unknown_size": o.macs.as_ref().err(),
    })
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
