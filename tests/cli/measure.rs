//! `dac onnx --measure`: errors without the runtime, and (where onnxruntime's shared library is
//! given by ORT_DYLIB_PATH; `.ci/run` sets it and DAC_REQUIRE_ORT=1) a measured plan that is
//! the file written. No assertion on a time: only on what the report says of itself.
#![cfg(all(feature = "cli", feature = "onnx"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn shipped_vgg() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fmnist_vgg.onnx")
}

/// `dac onnx fmnist_vgg -o output ARGS` with ORT_DYLIB_PATH set to `library` (or removed).
fn dac_onnx(output: &Path, args: &[&str], library: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dac"));
    cmd.arg("onnx").arg(shipped_vgg()).arg("-o").arg(output).args(args);
    match library {
        Some(l) => cmd.env("ORT_DYLIB_PATH", l),
        None => cmd.env_remove("ORT_DYLIB_PATH"),
    };
    cmd.output().expect("run dac")
}

#[test]
fn measure_without_the_library_says_where_to_find_it_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.onnx");
    let out = dac_onnx(&output, &["--speedup", "1.5", "--measure"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ort-library") && err.contains("ORT_DYLIB_PATH"), "{err}");
    assert!(!output.exists());

    let missing = dir.path().join("libonnxruntime.so.1.32.0");
    let missing = missing.to_str().unwrap();
    let out = dac_onnx(&output, &["--speedup", "1.5", "--measure", "--ort-library", missing], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(missing), "{err}");
    assert!(!output.exists());
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "a failed run leaves nothing behind");

    // --ort-library means nothing without --measure.
    let out = dac_onnx(&output, &["--speedup", "1.5", "--ort-library", missing], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--measure"));
}

#[test]
fn a_measured_plan_is_the_file_written_and_its_report_is_consistent() {
    let Some(lib) = crate::support::ort_library("--measure") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (measured, planned) = (dir.path().join("measured.onnx"), dir.path().join("planned.onnx"));
    let out = dac_onnx(&measured, &["--speedup", "1.5", "--measure", "--json"], Some(&lib));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &report["measured"];
    assert!(m["runtime"].as_str().unwrap().starts_with("onnxruntime"), "{m}");
    assert_eq!(m["target"].as_f64(), Some(1.5));
    let tries = m["tries"].as_array().unwrap();
    assert!((1..=dac::runtime::MAX_TRIES).contains(&tries.len()), "{m}");
    let aim = 1.5 * dac::runtime::AIM;
    assert_eq!(tries[0]["modeled_target"].as_f64(), Some(aim), "the first plan aims a little above the target");
    let chosen = &tries[m["chosen"].as_u64().unwrap() as usize];
    let speedup = |t: &serde_json::Value| t["time_before_ms"].as_f64().unwrap() / t["time_after_ms"].as_f64().unwrap();
    // The claim is the chosen plan's second timing.
    let again = |t: &serde_json::Value| speedup(&t["again"]);
    assert!((again(chosen) - m["speedup"].as_f64().unwrap()).abs() < 1e-9, "{m}");
    assert_eq!(m["met"].as_bool(), Some(again(chosen) >= 1.5));

    // The file written is the plan for the chosen modeled target, byte for byte.
    let goal = chosen["modeled_target"].as_f64().unwrap();
    assert_eq!(report["plan"]["target_speedup"].as_f64(), Some(goal));
    let out = dac_onnx(&planned, &["--speedup", &goal.to_string(), "--json"], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&measured).unwrap() == std::fs::read(&planned).unwrap());

    // --require-target keeps its meaning for a MAC target out of reach: an error, nothing written.
    let unreachable = dir.path().join("unreachable.onnx");
    let out = dac_onnx(&unreachable, &["--macs", "1000", "--require-target", "--measure"], Some(&lib));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be reached"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!unreachable.exists());
}
