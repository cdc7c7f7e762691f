//! Tables and JSON for a conversion's [`Summary`].

use dac::convert::{SizeSource, SkipReason, Summary};
use dac::runtime::Measured;
use std::time::Duration;

/// `1234567` -> `1.23M`.
pub fn si(v: u64) -> String {
    let v = v as f64;
    for (scale, suffix) in [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if v >= scale {
            return format!("{:.2}{suffix}", v / scale);
        }
    }
    format!("{v}")
}

/// Prints rows with each column padded to its widest cell.
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(c, s)| format!("{s:<w$}", w = widths[c])).collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn input_label(size: Option<(usize, usize)>, source: SizeSource) -> String {
    match (size, source) {
        (Some((h, w)), SizeSource::Default) => format!("{h}x{w} (default)"),
        (Some((h, w)), _) => format!("{h}x{w}"),
        (None, _) => "-".to_string(),
    }
}

fn macs(v: Option<u64>) -> String {
    v.map_or("?".to_string(), si)
}

/// A modeled time in milliseconds, `?` when unknown.
fn ms(d: Option<Duration>) -> String {
    d.map_or("?".to_string(), |d| format!("{:.3}", d.as_secs_f64() * 1e3))
}

/// `before/after` as `1.23x`, `?` when either is unknown.
fn times(before: Option<f64>, after: Option<f64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) if a > 0.0 => format!("{:.2}x", b / a),
        _ => "?".to_string(),
    }
}

/// Prints the summary: JSON, a table, or nothing; `graph`: an ONNX rewrite (whose modeled time
/// covers more than a checkpoint's).
pub fn report(s: &Summary, json: bool, quiet: bool, graph: bool) {
    report_measured(s, None, json, quiet, graph);
}

/// [`report`], with what `dac onnx --measure` measured.
pub fn report_measured(s: &Summary, measured: Option<&Measured>, json: bool, quiet: bool, graph: bool) {
    if json {
        let mut doc = s.to_json();
        if let (Some(m), Some(obj)) = (measured, doc.as_object_mut()) {
            obj.insert("measured".into(), m.to_json());
        }
        println!("{doc:#}");
    } else if !quiet {
        print_layers(s);
        print_totals(s, graph);
        if let Some(m) = measured {
            print_measured(m);
        }
        println!("wrote {}", s.output.display());
    }
}

/// The measured times, each plan timed, and the second timings (the claim rests on the written
/// plan's).
fn print_measured(m: &Measured) {
    let (before, after) = m.claim();
    let (b, a, x) = (ms(Some(before)), ms(Some(after)), m.speedup());
    let verdict = match (m.target, m.met()) {
        (Some(t), Some(true)) => format!(": target {t}x met"),
        (Some(t), _) => {
            let written = if m.original { "" } else { " is written" };
            format!(": target {t}x NOT met in the runtime (the fastest plan measured{written})")
        }
        _ => String::new(),
    };
    let again = match (m.chosen().again.is_some(), m.original) {
        (false, _) => "",
        (true, false) => ", the written plan timed again",
        (true, true) => ", the fastest plan timed again",
    };
    println!("measured in {}{again}: {b} -> {a} ms ({x:.2}x){verdict}", m.runtime);
    if m.original {
        println!("the fastest plan measured slower than the original ({x:.2}x): wrote the original unchanged");
    } else if x < 1.0 {
        println!("warning: the written model measured slower than the original ({x:.2}x); keep the original here");
    }
    if m.target.is_some() {
        for (i, t) in m.tries.iter().enumerate() {
            let goal = t.modeled_target.map_or("-".into(), |g| format!("{g:.2}x"));
            let modeled = t.modeled.map_or("?".into(), |g| format!("{g:.2}x"));
            let again = t.speedup_again().map(|s| format!(", again {s:.2}x")).unwrap_or_default();
            let kept = match (i == m.chosen, m.original) {
                (true, false) => " (written)",
                (true, true) => " (the fastest; slower than the original)",
                _ => "",
            };
            let reach = if t.reachable { "" } else { ", not reachable" };
            println!(
                "  try {}: planned for {goal} modeled{reach} ({modeled}), measured {:.2}x{again}{kept}",
                i + 1,
                t.speedup()
            );
        }
    }
}

fn print_layers(s: &Summary) {
    // A scheme column only when some layer is not DAC's (DAC-only tables stay as they were).
    let schemes = s.converted.iter().any(|l| l.scheme != dac::scheme::SchemeKind::Dac);
    let layouts = s.converted.iter().any(|l| l.layout.is_some());
    let head = ["layer", "rank", "rel. error", "MACs before -> after", "reduction", "ms (model)", "speed-up", "input"];
    let mut rows = vec![head.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    if layouts {
        rows[0].insert(2, "layout".to_string());
    }
    if schemes {
        rows[0].insert(1, "scheme".to_string());
    }
    for l in &s.converted {
        let (before, after) = (l.before.map(|c| c.macs), l.after.map(|c| c.macs));
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        rows.push(vec![
            l.name.clone(),
            format!("{}/{}", l.rank, l.max_rank),
            format!("{:.3e}", l.relative_error),
            format!("{} -> {}", macs(before), macs(after)),
            times(before.map(|b| b as f64), after.map(|a| a as f64)),
            format!("{} -> {}", ms(l.time_before), ms(l.time_after)),
            times(secs(l.time_before), secs(l.time_after)),
            input_label(l.input_size, l.size),
        ]);
        if layouts {
            let layout = l.layout.map_or("-", |l| l.as_str()).to_string();
            rows.last_mut().expect("just pushed").insert(2, layout);
        }
        if schemes {
            rows.last_mut().expect("just pushed").insert(1, l.scheme.name().to_string());
        }
    }
    if s.converted.is_empty() {
        println!("no layer converted");
    } else {
        print_table(&rows);
    }
    if !s.skipped.is_empty() {
        println!();
        println!("left dense:");
        let shape = |d: Option<[usize; 4]>| d.map_or("-".to_string(), |d| format!("{d:?}"));
        let rows: Vec<Vec<String>> = s
            .skipped
            .iter()
            .map(|l| {
                vec![format!("  {}", l.name), shape(l.dims), l.reason.to_string(), input_label(l.input_size, l.size)]
            })
            .collect();
        print_table(&rows);
        let inputs = s.skipped.iter().filter(|l| l.reason == SkipReason::WeightIsGraphInput).count();
        if inputs > 0 {
            println!(
                "  ({inputs} weight(s) are also graph inputs; --freeze-input-weights converts them as constants \
                 and drops the replaced ones from the inputs)"
            );
        }
    }
    println!();
}

/// Why the totals are unknown: the first layers whose size is unknown, and what to pass.
fn print_uncounted(s: &Summary, layout: &str) {
    println!("total: MACs unknown{layout}: the sizes of {} layer(s) are unknown:", s.uncounted.len());
    for u in s.uncounted.iter().take(3) {
        println!("  {}: {}", u.name, u.reason);
    }
    if s.uncounted.len() > 3 {
        println!("  ... and {} more (--json lists them all)", s.uncounted.len() - 3);
    }
    println!("  give the model's input size (--input HxW) or these layers' (--layer-input NAME=HxW)");
}

fn print_totals(s: &Summary, graph: bool) {
    if let Some(p) = &s.plan {
        let (target, (got, max)) = (p.target, p.achieved());
        if p.met {
            let (depth, score) = (p.depth_weight, if s.input_moments { "input moments" } else { "weights only" });
            println!("plan: target {target} met: {got:.2}x (data-free planner, {score}, depth weight {depth})");
        } else {
            println!(
                "plan: target {target} NOT reachable; the cheapest plan reaches {got:.2}x (at most {max:.2}x possible)"
            );
        }
    }
    let defaults = s.defaulted_sizes();
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
    let layout = s.layout.map(|l| format!(", {} layout", l.as_str())).unwrap_or_default();
    let mut note = s.assumption.map(|a| format!("; {a}")).unwrap_or_default();
    if !s.subgraph_nodes.is_empty() {
        note.push_str("; the main graph only (see `not read` below)");
    }
    if !s.other_weights.is_empty() {
        note.push_str("; 2-D convolutions and linear layers only (see `not counted` below)");
    }
    match (s.macs_before(), s.macs_after(), s.reduction()) {
        (Some(b), Some(a), Some(x)) => println!(
            "total: {} -> {} MACs over all convolutions and linear layers ({x:.2}x){layout}{note}",
            si(b),
            si(a)
        ),
        _ => print_uncounted(s, &layout),
    }
    if let (Some(b), Some(a), Some(x)) = (s.time_before(), s.time_after(), s.speedup()) {
        let covered = if graph {
            "convolutions, matrix products, Concat/Add, Swish, scales and pooling"
        } else {
            "convolutions, linear layers and the layouts' Concat/Add; a checkpoint has no graph, so its pooling \
             and activations are not counted"
        };
        println!("modeled time: {} -> {} ms ({x:.2}x) of {covered}; {}", ms(Some(b)), ms(Some(a)), s.time_model);
        print_unmodeled(s);
        let time_target = s.plan.as_ref().is_some_and(|p| matches!(p.target, dac::plan::Target::TimeReduction(_)));
        if x < 1.0 && !time_target {
            println!(
                "warning: the result is modeled slower than the original ({x:.2}x); only --speedup plans for time"
            );
        }
    }
    if !s.subgraph_nodes.is_empty() {
        println!(
            "not read: the subgraphs of {} (convolutions inside them are neither converted nor counted)",
            s.subgraph_nodes.join(", ")
        );
    }
    print_other_weights(&s.other_weights);
}

/// The graph's operators outside the time model, when there are any.
fn print_unmodeled(s: &Summary) {
    if s.unmodeled.is_empty() {
        return;
    }
    let list: Vec<String> = s.unmodeled.iter().map(|(op, n)| format!("{op} x{n}")).collect();
    println!(
        "not modeled: {} (outside both modeled times; where they take time the real speed-up is lower)",
        list.join(", ")
    );
}

/// A checkpoint's 3-D and 5-D weights, when there are any.
pub fn print_other_weights(weights: &[String]) {
    if !weights.is_empty() {
        println!(
            "not counted: {} (weights of 3 or 5 dimensions, 1-D or 3-D convolutions: neither converted nor in \
             the totals)",
            weights.join(", ")
        );
    }
}
