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
