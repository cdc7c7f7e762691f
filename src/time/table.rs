//! Reading a time table (the JSON `bench/calibrate.py` writes).

use super::{table_error, ConvClass, ElementOp, Entry, Feature, Linear, Op, TimeModel};
use crate::error::Result;
use serde_json::Value;

/// Parses `text`, keeping the table measured with the most threads not above `threads`.
pub(super) fn parse(name: &str, text: &str, threads: usize) -> Result<TimeModel> {
    let err = |reason: String| table_error(name, reason);
    if threads == 0 {
        return Err(err("thread count 0; give at least 1".to_string()));
    }
    let root: Value = serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?;
    let block = root.get("block").and_then(Value::as_u64).filter(|&b| b > 0);
    let block = block.ok_or_else(|| err("`block` (channels per block) must be a positive integer".into()))?;
    let runtime = root.get("runtime").and_then(Value::as_str).unwrap_or("unknown runtime").to_string();
    let isa = root.get("isa").and_then(Value::as_str).map(str::to_string);
    let cpu = root.get("cpu").and_then(Value::as_str).map(str::to_string);
    let family = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    let cpu_family = root.get("cpu_family").map(|v| family(v).ok_or(v)).transpose();
    let cpu_family = cpu_family.map_err(|v| err(format!("`cpu_family` must be a CPUID family number, not {v}")))?;
    let tables = root.get("tables").and_then(Value::as_array).ok_or_else(|| err("no `tables` array".into()))?;
    let mut best: Option<(usize, &Value)> = None;
    for t in tables {
        let n = t.get("threads").and_then(Value::as_u64).filter(|&n| n > 0);
        let n = n.ok_or_else(|| err("a table's `threads` must be a positive integer".into()))? as usize;
        if n <= threads && best.is_none_or(|(b, _)| n > b) {
            best = Some((n, t));
        }
    }
    let (measured, table) = best.ok_or_else(|| err(format!("no table measured with at most {threads} thread(s)")))?;
    let entries = table.get("entries").and_then(Value::as_array);
    let entries = entries.ok_or_else(|| err(format!("the {measured}-thread table has no `entries` array")))?;
    let mut model = TimeModel {
        name: name.to_string(),
        runtime,
        isa,
        cpu,
        cpu_family,
        threads: measured,
        block: block as usize,
        entries: Vec::new(),
    };
    for (i, e) in entries.iter().enumerate() {
        model.entries.push(entry(e).map_err(|r| err(format!("{measured}-thread entry {i}: {r}")))?);
    }
    // Every op needs an entry but `gemv` and `matmul` (a table without them times products as
    // 1x1 convolutions), `conv_one_position` and `conv_grouped_blocks` (without them those
    // convolutions take their class's entry) and the element operators (left outside the model
    // without one).
    let ops = ConvClass::ALL.into_iter().map(Op::Conv).chain([Op::Concat, Op::Add]);
    match ops.into_iter().find(|op| !model.entries.iter().any(|e| e.op == *op)) {
        Some(Op::Conv(c)) => Err(err(format!("no entry for conv class `{}`", c.name()))),
        Some(op) => Err(err(format!("no entry for `{}`", if op == Op::Concat { "concat" } else { "add" }))),
        None => Ok(model),
    }
}

/// One entry: its op (and class), alignment and fit.
fn entry(e: &Value) -> std::result::Result<Entry, String> {
    let fit = linear(e)?;
    let op = match e.get("op").and_then(Value::as_str) {
        Some("conv") => {
            let class = e.get("class").and_then(Value::as_str).unwrap_or("");
            Op::Conv(ConvClass::from_name(class).ok_or_else(|| format!("unknown conv class `{class}`"))?)
        }
        Some("concat") => Op::Concat,
        Some("add") => Op::Add,
        Some("gemv") => Op::Gemv,
        Some("conv_one_position") => Op::ConvOnePosition,
        Some("conv_grouped_blocks") => Op::ConvGroupedBlocks,
        Some("matmul") => Op::MatMul,
        other => match ElementOp::ALL.into_iter().find(|o| Some(o.name()) == other) {
            Some(op) => Op::Elements(op),
            None => {
                let elements = ElementOp::ALL.map(ElementOp::name).join(" | ");
                return Err(format!(
                    "unknown op {other:?} (conv | concat | add | gemv | matmul | conv_one_position | conv_grouped_blocks | {elements})"
                ));
            }
        },
    };
    let aligned = match e.get("aligned") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(format!("`aligned` must be true, false or null, not {other}")),
    };
    Ok(Entry { op, aligned, fit })
}

/// `features` and `coef` of an entry: as many, known names, finite non-negative values.
fn linear(e: &Value) -> std::result::Result<Linear, String> {
    let features = e.get("features").and_then(Value::as_array).ok_or("no `features` array")?;
    let coef = e.get("coef").and_then(Value::as_array).ok_or("no `coef` array")?;
    if features.len() != coef.len() {
        return Err(format!("{} features but {} coefficients", features.len(), coef.len()));
    }
    let mut terms = Vec::with_capacity(coef.len());
    for (f, c) in features.iter().zip(coef) {
        let name = f.as_str().unwrap_or("");
        let feature = Feature::parse(name).ok_or_else(|| format!("unknown feature `{name}`"))?;
        let value = c.as_f64().filter(|v| v.is_finite() && *v >= 0.0);
        terms.push((feature, value.ok_or_else(|| format!("coefficient {c} of `{name}` is not finite and >= 0"))?));
    }
    Ok(Linear { terms })
}
