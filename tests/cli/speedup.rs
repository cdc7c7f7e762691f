//! `dac convert --speedup X`: the plan in the binary's JSON and table.
#![cfg(feature = "cli")]

use crate::support::files::stack;
use std::process::Command;

#[test]
fn binary_speedup_json_shows_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let input = stack(dir.path());
    let out = dir.path().join("o.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_dac"))
        .args(["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .args(["--macs", "1.5", "--input", "16x16", "--layer-input", "c3=4x4", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["plan"]["met"], true);
    assert_eq!(v["plan"]["target_mac_reduction"], 1.5);
    assert!(v["total"]["reduction"].as_f64().unwrap() >= 1.5);
    assert_eq!(v["linear_macs"], 640);
    assert_eq!(v["plan"]["layers"].as_array().unwrap().len(), 4);
    let defaults: Vec<bool> = v["converted"]
        .as_array()
        .unwrap()
        .iter()
        .chain(v["skipped"].as_array().unwrap())
        .filter(|l| l["name"] == "c3")
        .map(|l| l["default_input"].as_bool().unwrap())
        .collect();
    assert_eq!(defaults, [false]);

    // The table names the plan and the layers that used the default size.
    let o = Command::new(env!("CARGO_BIN_EXE_dac"))
        .args(["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--force"])
        .args(["--macs", "1.5", "--input", "16x16"])
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("plan: target 1.5x fewer MACs met"), "{text}");
    assert!(text.contains("used the default --input size"), "{text}");

    // --speedup conflicts with --rank.
    let o = Command::new(env!("CARGO_BIN_EXE_dac"))
        .args(["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--force"])
        .args(["--macs", "2", "--rank", "1", "--input", "8"])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

/// `--speedup` plans with a table measured on another kind of CPU say so on stderr (and what
/// to do); a table of this CPU's kind, `--macs` and `--quiet` do not.
#[test]
fn a_table_of_another_cpu_is_named_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let input = stack(dir.path());
    let shipped = include_str!("../../src/time/onnxruntime-x86_64.json");
    let this = dac::time::Cpu::this();
    // The shipped table names its CPU family; these copies name this CPU's, or none.
    let family = this.family.map_or(String::new(), |f| format!("\"cpu_family\": {f},"));
    let family_shown = this.family.map_or(String::new(), |f| format!(", family {f}"));
    let table = |file: &str, cpu: &str, isa: &str| {
        let text = shipped
            .replacen("\"cpu\": \"AMD EPYC\"", &format!("\"cpu\": {}", serde_json::json!(cpu)), 1)
            .replacen("\"cpu_family\": 25,", &family, 1)
            .replacen("\"isa\": \"avx512\"", &format!("\"isa\": {}", serde_json::json!(isa)), 1);
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        path
    };
    let run_out = |table: &std::path::Path, target: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_dac"))
            .args(["convert", input.to_str().unwrap(), "-o"])
            .arg(dir.path().join("o.safetensors"))
            .args(["--force", "--input", "16x16", "--time-table", table.to_str().unwrap()])
            .args(target)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (String::from_utf8(o.stderr).unwrap(), String::from_utf8(o.stdout).unwrap())
    };
    let run = |table: &std::path::Path, target: &[&str]| run_out(table, target).0;
    // The JSON report says it too, whatever the target, as `time_model_other_cpu` (null: same kind).
    let other_cpu = |table: &std::path::Path| {
        let report: serde_json::Value = serde_json::from_str(&run_out(table, &["--macs", "1.2", "--json"]).1).unwrap();
        report["time_model_other_cpu"].clone()
    };
    let other = table("other.json", "Imaginary Vector Engine 9000", &this.isa);
    let stderr = run(&other, &["--speedup", "1.2"]);
    assert!(stderr.contains("note: the time table was measured on Imaginary Vector Engine 9000"), "{stderr}");
    assert!(stderr.contains(&format!("this CPU is {this}")), "{stderr}");
    assert!(stderr.contains("--measure"), "{stderr}");
    assert!(!run(&other, &["--speedup", "1.2", "--quiet"]).contains("note:"));
    assert!(!run(&other, &["--macs", "1.2"]).contains("note:"));
    let why = other_cpu(&other);
    assert!(why.as_str().is_some_and(|w| w.starts_with("measured on Imaginary Vector Engine 9000")), "{why}");
    let other_isa = table("isa.json", this.name.as_deref().unwrap_or("x"), "an-isa-no-cpu-has");
    assert!(run(&other_isa, &["--speedup", "1.2"]).contains(&format!("(an-isa-no-cpu-has{family_shown}); this CPU is")));
    if let Some(name) = &this.name {
        let same = table("this.json", name, &this.isa);
        assert!(!run(&same, &["--speedup", "1.2"]).contains("note:"));
        assert!(other_cpu(&same).is_null());
        // The same name and instruction set, another CPUID family: another generation.
        if let Some(family) = this.family {
            let text = std::fs::read_to_string(&same).unwrap();
            let text =
                text.replacen(&format!("\"cpu_family\": {family},"), &format!("\"cpu_family\": {},", family + 1), 1);
            std::fs::write(&same, text).unwrap();
            let stderr = run(&same, &["--speedup", "1.2"]);
            assert!(stderr.contains(&format!("family {}); this CPU is", family + 1)), "{stderr}");
        }
    }
}

/// `--input-moments FILE`: every planned layer scored by its entry (identity moments here, in
/// f32 as scripts/synthetic_moments.py writes them); a layer without an entry or with an entry
/// of the wrong size is an error naming it, and nothing is written; only with a target.
#[test]
fn input_moments_score_every_planned_layer_or_fail_naming_it() {
    use crate::support::files::{encode, write, T};
    let dir = tempfile::tempdir().unwrap();
    let input = stack(dir.path());
    let identity = |name: &str, d: usize| {
        let v: Vec<f32> = (0..d * d).map(|i| f32::from(u8::from(i % (d + 1) == 0))).collect();
        T { name: name.into(), dtype: "F32".into(), shape: vec![d, d], data: encode(&v, "F32") }
    };
    let run = |moments: &[T], extra: &[&str]| {
        let m = dir.path().join("m.safetensors");
        write(&m, moments, &[]);
        let out = dir.path().join("o.safetensors");
        let _ = std::fs::remove_file(&out);
        let o = Command::new(env!("CARGO_BIN_EXE_dac"))
            .args(["convert", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--input", "16x16", "--json"])
            .args(["--input-moments", m.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        (o, out.exists())
    };
    let all = [identity("c0", 27), identity("c1", 144), identity("c2", 288), identity("c3", 576)];
    let (o, written) = run(&all, &["--macs", "1.5"]);
    assert!(o.status.success() && written, "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["plan"]["met"], true);

    let (o, written) = run(&all[..3], &["--macs", "1.5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !written && err.contains("`c3`") && err.contains("input moments"), "{err}");

    let wrong = [identity("c0", 27), identity("c1", 144), identity("c2", 144), identity("c3", 576)];
    let (o, written) = run(&wrong, &["--macs", "1.5"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !written && err.contains("`c2`") && err.contains("dimension = 144"), "{err}");

    let (o, written) = run(&all, &["--rank", "2"]);
    assert!(!o.status.success() && !written);
}
