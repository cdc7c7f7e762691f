//! `dac inspect`.

use super::args::{parse_assignment, parse_size, SvdArg};
use super::table::{print_table, si};
use clap::Args;
use dac::convert::Precision;
use dac::io::{self, InspectOptions, LayerInfo};
use serde_json::json;
use std::path::PathBuf;

#[derive(Args)]
pub struct InspectArgs {
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

pub fn run(a: &InspectArgs) -> dac::Result<()> {
    let mut o =
        InspectOptions::new().precision(if a.f64 { Precision::F64 } else { Precision::F32 }).svd(a.svd.method());
    for (p, g) in &a.groups {
        o = o.groups(p.clone(), *g);
    }
    if let Some((h, w)) = a.input {
        o = o.input_size(h, w);
    }
    let layers = io::inspect_file(&a.model, &o)?;
    let note = io::ASSUMPTION;
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
    let size = match a.input {
        Some((h, w)) => format!("MACs ({h}x{w})"),
        None => "MACs/position".to_string(),
    };
    let head = ["layer", "shape", "groups", "max rank", "break-even", "energy r=1", "r=2", "r=3", "r=4", "r=5"];
    let mut rows = vec![head.iter().map(|s| s.to_string()).chain([size]).collect::<Vec<_>>()];
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
        rows.push(row);
    }
    print_table(&rows);
    let total = si(layers.iter().map(|l| l.cost.macs).sum::<u64>());
    println!("{} convolution(s), {total} MACs in total; {note}", layers.len());
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
