//! `dac onnx --synthetic-moments`: the planner scored by moments measured in onnxruntime (where
//! its library is given by ORT_DYLIB_PATH; `.ci/run` sets it and DAC_REQUIRE_ORT=1), the saved
//! moments are what `--input-moments` reads back to the same plan, and every error leaves
//! nothing behind.
#![cfg(all(feature = "cli", feature = "onnx"))]

use crate::support::onnx::*;
use crate::support::values;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `a`: 3 -> 16, 3x3; Relu; `b`: 16 -> 16, 3x3; both padded, on 1x3x16x16.
fn write_net(dir: &Path) -> PathBuf {
    let mut g = Graph::default();
    g.inits.push(tensor("a.weight", &[16, 3, 3, 3], &values(21, 16 * 27)));
    g.inits.push(tensor("b.weight", &[16, 16, 3, 3], &values(22, 16 * 144)));
    let pads = || vec![attr_ints("pads", &[1, 1, 1, 1])];
    g.nodes.push(node("Conv", "a", &["image", "a.weight"], &["ya"], &pads(), &[]));
    g.nodes.push(node("Relu", "relu", &["ya"], &["ra"], &[], &[]));
    g.nodes.push(node("Conv", "b", &["ra", "b.weight"], &["y"], &pads(), &[]));
    g.inputs.push(value_info("image", &[Some(1), Some(3), Some(16), Some(16)]));
    g.outputs.push(value_info("y", &[Some(1), Some(16), Some(16), Some(16)]));
    let path = dir.join("net.onnx");
    std::fs::write(&path, model(&g, 13, &[])).unwrap();
    path
}

/// `dac onnx MODEL -o OUTPUT ARGS --json` with ORT_DYLIB_PATH set to `library` (or removed).
fn dac_onnx(model: &Path, output: &Path, args: &[&str], library: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dac"));
    cmd.arg("onnx").arg(model).arg("-o").arg(output).args(args).arg("--json");
    match library {
        Some(l) => cmd.env("ORT_DYLIB_PATH", l),
        None => cmd.env_remove("ORT_DYLIB_PATH"),
    };
    cmd.output().expect("run dac")
}

#[test]
fn synthetic_moments_score_the_plan_and_save_what_input_moments_reads_back() {
    let Some(lib) = crate::support::ort_library("--synthetic-moments") else { return };
    let dir = tempfile::tempdir().unwrap();
    let net = write_net(dir.path());
    let (first, second) = (dir.path().join("first.onnx"), dir.path().join("second.onnx"));
    let saved = dir.path().join("m.safetensors");
    let out = dac_onnx(
        &net,
        &first,
        &["--macs", "1.5", "--synthetic-moments", "--save-moments", saved.to_str().unwrap()],
        Some(&lib),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["planner_score"], "input moments", "{report}");
    let moments = dac::io::read_input_moments(&saved).unwrap();
    assert_eq!(moments.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!((moments["a"].dim(), moments["b"].dim()), (27, 144));

    // The saved moments plan the same model, byte for byte.
    let out = dac_onnx(&net, &second, &["--macs", "1.5", "--input-moments", saved.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap());

    // The prior is the images': another one, other moments.
    let other = dir.path().join("other.safetensors");
    let args =
        ["--macs", "1.5", "--synthetic-moments", "--prior", "0.3,0,1", "--save-moments", other.to_str().unwrap()];
    let out = dac_onnx(&net, &dir.path().join("third.onnx"), &args, Some(&lib));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let b = dac::io::read_input_moments(&other).unwrap();
    assert!(
        b["a"].values()[0] > moments["a"].values()[0] + 0.5,
        "pixels of variance 1 around 0, not 0.0625 around 0.5"
    );

    // An existing moments file is kept without --force, and nothing else is written.
    let fourth = dir.path().join("fourth.onnx");
    let out = dac_onnx(
        &net,
        &fourth,
        &["--macs", "1.5", "--synthetic-moments", "--save-moments", saved.to_str().unwrap()],
        Some(&lib),
    );
    assert!(!out.status.success() && !fourth.exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn synthetic_moments_errors_name_what_is_missing_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let net = write_net(dir.path());
    let before = std::fs::read(&net).unwrap();
    let out_path = dir.path().join("out.onnx");
    let saved = dir.path().join("m.safetensors");
    let save = saved.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--macs", "1.5", "--synthetic-moments", "--save-moments", save], "ORT_DYLIB_PATH"),
        (&["--rank", "2", "--synthetic-moments"], "--speedup"),
        (&["--macs", "1.5", "--synthetic-moments", "--prior", "1,0.5,0.2"], "rho"),
        (&["--macs", "1.5", "--synthetic-moments", "--normalize", "0.5"], "MEAN"),
        (&["--macs", "1.5", "--save-moments", save], "--synthetic-moments"),
        (&["--macs", "1.5", "--synthetic-moments", "--input-moments", save], "--input-moments"),
    ];
    for (args, says) in cases {
        let out = dac_onnx(&net, &out_path, args, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{args:?}: {err}");
        assert!(!out_path.exists() && !saved.exists(), "{args:?} wrote a file");
    }
    // The moments file may not be the model or the output.
    for target in [&net, &out_path] {
        let args = ["--macs", "1.5", "--synthetic-moments", "--save-moments", target.to_str().unwrap(), "--force"];
        let out = dac_onnx(&net, &out_path, &args, crate::support::ort_library("--synthetic-moments").as_deref());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("is the input file"), "{err}");
    }
    assert_eq!(std::fs::read(&net).unwrap(), before);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the model is left");
}
