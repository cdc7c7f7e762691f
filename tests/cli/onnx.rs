//! `dac onnx` end to end: output, JSON report, exit codes, nothing written on error.
#![cfg(all(feature = "cli", feature = "onnx"))]

use crate::support::cli::dac;
use crate::support::onnx::*;
use crate::support::values;

fn model_bytes() -> Vec<u8> {
    model_bytes_with_input(&[None, Some(3), Some(16), Some(16)])
}

/// `dac onnx INPUT -o OUTPUT` followed by `extra`.
fn onnx_to(input: &std::path::Path, output: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<&std::ffi::OsStr> = vec!["onnx".as_ref(), input.as_os_str(), "-o".as_ref(), output.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    dac(&args)
}

/// `dac onnx input -o output ARGS --json --force`, which must succeed, as parsed JSON.
fn onnx_report(input: &std::path::Path, output: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = onnx_to(input, output, &[args, &["--json", "--force"]].concat());
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Two 3x3 convolutions with a `Relu` between them; `input` declares `dims`.
fn model_bytes_with_input(dims: &[Option<usize>]) -> Vec<u8> {
    let mut g = Graph::default();
    g.inits.push(tensor("features.0.weight", &[16, 3, 3, 3], &values(1, 16 * 27)));
    g.inits.push(tensor("features.0.bias", &[16], &values(2, 16)));
    g.inits.push(tensor("features.1.weight", &[16, 16, 3, 3], &values(3, 16 * 16 * 9)));
    let pads = || vec![attr_ints("pads", &[1, 1, 1, 1])];
    g.nodes.push(node(
        "Conv",
        "/features.0/Conv",
        &["input", "features.0.weight", "features.0.bias"],
        &["a"],
        &pads(),
        &[],
    ));
    g.nodes.push(node("Relu", "/relu", &["a"], &["b"], &[], &[]));
    g.nodes.push(node("Conv", "/features.1/Conv", &["b", "features.1.weight"], &["y"], &pads(), &[]));
    g.inputs.push(value_info("input", dims));
    g.outputs.push(value_info("y", &[None, Some(16), Some(16), Some(16)]));
    model(&g, 13, &[])
}

#[test]
fn rewrites_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, model_bytes()).unwrap();
    let out = dac(&[
        "onnx".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
        "--macs".as_ref(),
        "1.5".as_ref(),
        "--json".as_ref(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["plan"]["met"].as_bool().unwrap());
    assert!(v["reduction"].as_f64().unwrap() >= 1.5);
    assert_eq!(v["input_size"], serde_json::json!([16, 16]));
    assert!(output.exists());
    let x = values(5, 3 * 256);
    let y = run_tract(&std::fs::read(&output).unwrap(), &[1, 3, 16, 16], &x);
    assert_eq!(y.len(), 16 * 256);

    // A layer selection by weight stem, the table output, and --force.
    let out = dac(&[
        "onnx".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        output.as_os_str(),
        "--rank".as_ref(),
        "2".as_ref(),
        "--layers".as_ref(),
        "features.1".as_ref(),
        "--force".as_ref(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("/features.1/Conv") && table.contains("not matched by an include pattern"), "{table}");
}

#[test]
fn errors_exit_non_zero_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, b"not a model at all").unwrap();
    let out =
        dac(&["onnx".as_ref(), input.as_os_str(), "-o".as_ref(), output.as_os_str(), "--rank".as_ref(), "2".as_ref()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in.onnx") && err.contains("not an ONNX model"), "{err}");
    assert!(!output.exists());

    std::fs::write(&input, model_bytes()).unwrap();
    let out =
        dac(&["onnx".as_ref(), input.as_os_str(), "-o".as_ref(), input.as_os_str(), "--rank".as_ref(), "2".as_ref()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("output is the input"));
    assert_eq!(std::fs::read(&input).unwrap(), model_bytes());

    // No policy given.
    let out = dac(&["onnx".as_ref(), input.as_os_str(), "-o".as_ref(), output.as_os_str()]);
    assert!(!out.status.success());
    assert!(!output.exists());
}

/// The library names API options; `dac onnx` (as `dac convert`) maps them to its flags, and
/// writes nothing.
#[test]
fn option_errors_name_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, model_bytes()).unwrap();
    let run = |extra: &[&str]| onnx_to(&input, &output, &[&["--rank", "2"], extra].concat());
    for (extra, flag) in [
        (&["--layers", "nope*"][..], "--layers"),
        (&["--skip", "x"][..], "--skip"),
        (&["--rank-for", "y=1"][..], "--rank-for"),
        (&["--layer-input", "w=4x4"][..], "--layer-input"),
    ] {
        let out = run(extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains("matches no convolution"), "{extra:?}: {err}");
        assert!(!output.exists(), "{extra:?}");
    }
}

/// `--require-target`: an unreachable target exits 1 naming the flag and writes nothing; without
/// it the cheapest plan is written and reported NOT reachable.
#[test]
fn require_target_fails_an_unreachable_target() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, model_bytes()).unwrap();
    let run = |extra: &[&str]| onnx_to(&input, &output, extra);
    for (target, measure) in [("--macs", "1000x fewer MACs"), ("--speedup", "1000x faster (modeled)")] {
        let out = run(&[target, "1000", "--require-target"]);
        assert_eq!(out.status.code(), Some(1), "{target}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("target {measure} cannot be reached")), "{target}: {err}");
        assert!(err.contains("--require-target"), "{target}: {err}");
        assert!(!output.exists(), "{target}");
        let out = run(&[target, "1000", "--force"]);
        assert!(out.status.success(), "{target}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("NOT reachable"));
        std::fs::remove_file(&output).unwrap();
    }
    let out = run(&["--macs", "1.2", "--require-target"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(output.exists());
}

/// `model_bytes` with an operator shape inference cannot follow between the two convolutions.
fn opaque_model() -> Vec<u8> {
    let mut g = Graph::default();
    g.inits.push(tensor("c1.weight", &[8, 3, 3, 3], &values(1, 8 * 27)));
    g.inits.push(tensor("c2.weight", &[8, 8, 3, 3], &values(3, 8 * 8 * 9)));
    g.nodes.push(node("Conv", "c1", &["input", "c1.weight"], &["a"], &[], &[]));
    g.nodes.push(node("CustomPad", "/custom/Pad", &["a"], &["b"], &[], &[]));
    g.nodes.push(node("Conv", "c2", &["b", "c2.weight"], &["y"], &[], &[]));
    g.inputs.push(value_info("input", &[None, Some(3), Some(16), Some(16)]));
    g.outputs.push(value_info("y", &[None, Some(8), None, None]));
    model(&g, 13, &[])
}

#[test]
fn unknown_sizes_are_named_never_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, opaque_model()).unwrap();
    let args = |extra: &[&str]| {
        let mut a: Vec<std::ffi::OsString> =
            vec!["onnx".into(), input.clone().into(), "-o".into(), output.clone().into()];
        a.extend(extra.iter().map(|s| s.into()));
        a.push("--force".into());
        a
    };
    // A target needs every size: the error names the layer, the node that stopped inference and
    // the flags; nothing is written, even with --input (the model's size is no layer's size).
    let out = dac(&args(&["--macs", "1.5", "--input", "16x16"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c2") && err.contains("/custom/Pad") && err.contains("--layer-input"), "{err}");
    assert!(!output.exists());
    // A fixed rank converts, and the totals say they are unknown and why.
    let out = dac(&args(&["--rank", "2"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("total: MACs unknown") && text.contains("/custom/Pad"), "{text}");
    let out = dac(&args(&["--rank", "2", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["macs_before"], serde_json::Value::Null);
    assert_eq!(v["uncounted"][0]["name"], "c2");
    // Declaring the layer's size (14x14 after the custom op) makes every number known.
    let out = dac(&args(&["--macs", "1.5", "--layer-input", "c2=14x14", "--json"]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["macs_before"], serde_json::json!(8 * 27 * 14 * 14 + 8 * 72 * 12 * 12));
}

/// A model input of symbolic height and width: `--speedup` needs the sizes of the convolutions
/// and of the nodes between them; the error names a convolution (not the `Relu` between them)
/// and the flag that gives every size, and `--input` makes the plan.
#[test]
fn a_symbolic_input_size_names_a_layer_and_the_input_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    let symbolic = model_bytes_with_input(&[None, Some(3), None, None]);
    std::fs::write(&input, symbolic).unwrap();
    let run = |extra: &[&str]| onnx_to(&input, &output, extra);
    let out = run(&["--speedup", "1.5"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("layer `/features.0/Conv`") && err.contains("symbolic or missing dimension 2"), "{err}");
    assert!(err.contains("--input HxW") && !err.contains("node `") && !err.contains("(`--input"), "{err}");
    assert!(!output.exists());
    let out = run(&["--speedup", "1.5", "--input", "16x16"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `dac inspect` on an ONNX model: geometry from the nodes, sizes from shape inference, MACs
/// worked out by hand, and the energies equal to those of the same weights in a checkpoint.
#[test]
fn inspect_reads_an_onnx_model() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("net.onnx");
    std::fs::write(&input, model_bytes()).unwrap();
    let out = dac(&["inspect".as_ref(), input.as_os_str(), "--json".as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(layers[0]["shape"], serde_json::json!([16, 3, 3, 3]));
    assert_eq!(layers[0]["padding"], serde_json::json!([1, 1, 1, 1]));
    // 16 outputs x 27 taps x 16x16 positions; 16 x 144 x 256.
    assert_eq!(layers[0]["macs"], 16 * 27 * 256);
    assert_eq!(layers[1]["macs"], 16 * 144 * 256);
    assert_eq!(v["total_macs"], 16 * 27 * 256 + 16 * 144 * 256);

    // The same weights in a checkpoint, geometry declared: the same energies and MACs.
    let st = dir.path().join("net.safetensors");
    let tensor = |name: &str, shape: &[usize], seed: u64| crate::support::files::T {
        name: name.to_string(),
        dtype: "F32".to_string(),
        shape: shape.to_vec(),
        data: crate::support::files::encode(&values(seed, shape.iter().product()), "F32"),
    };
    let tensors = [tensor("features.0.weight", &[16, 3, 3, 3], 1), tensor("features.1.weight", &[16, 16, 3, 3], 3)];
    crate::support::files::write(&st, &tensors, &[]);
    let out = dac(&["inspect".as_ref(), st.as_os_str(), "--input".as_ref(), "16x16".as_ref(), "--json".as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (a, b) in layers.iter().zip(w["layers"].as_array().unwrap()) {
        assert_eq!(a["macs"], b["macs"]);
        assert_eq!(a["retained_energy"], b["retained_energy"]);
    }

    // Groups come from the nodes: declaring them is an error, not silently ignored.
    let out = dac(&["inspect".as_ref(), input.as_os_str(), "--groups".as_ref(), "*=2".as_ref()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("an ONNX node declares its own"));

    // The table says where the counts come from.
    let out = dac(&["inspect".as_ref(), input.as_os_str()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("16x16 (inferred)") && text.contains("from the graph's nodes"), "{text}");
}

/// `--depth-weight`: the report carries the weight the plan used (3 by default among every
/// scheme, 0 for DAC alone, the flag's value when given); a negative one exits 1 naming it and
/// writes nothing.
#[test]
fn depth_weight_is_reported_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, model_bytes()).unwrap();
    let weight = |extra: &[&str]| -> f64 {
        let json = onnx_report(&input, &output, &[&["--macs", "1.5"], extra].concat());
        json["plan"]["depth_weight"].as_f64().expect("plan.depth_weight")
    };
    assert_eq!(weight(&[]), dac::plan::AUTO_DEPTH_WEIGHT);
    assert_eq!(weight(&["--scheme", "dac"]), 0.0);
    assert_eq!(weight(&["--depth-weight", "1.5"]), 1.5);
    std::fs::remove_file(&output).unwrap();
    let out = onnx_to(&input, &output, &["--macs", "1.5", "--depth-weight=-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("depth weight = -1"));
    assert!(!output.exists());
}

#[test]
fn a_mac_plan_modeled_slower_than_the_original_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, model_bytes()).unwrap();
    let warning = "warning: the result is modeled slower than the original";
    let dac = ["--macs", "1.5", "--scheme", "dac", "--allow-slower"];
    for args in [&dac[..], &["--macs", "1.2"], &["--speedup", "1.2"]] {
        let report = onnx_report(&input, &output, args);
        let slower = report["speedup"].as_f64().expect("speedup") < 1.0;
        let text = onnx_to(&input, &output, &[args, &["--force"]].concat());
        let warned = String::from_utf8_lossy(&text.stdout).contains(warning);
        assert_eq!(warned, slower && args[0] == "--macs", "{args:?}: modeled speed-up {}", report["speedup"]);
        if args == dac {
            assert!(warned, "DAC at 1.5x fewer MACs on 16x16 is modeled slower: {}", report["speedup"]);
        }
    }
}

/// `--macs` keeps dense every layer whose factors are not modeled 10 % faster than it (the
/// break-even guard in time), unless `--allow-slower`.
#[test]
fn a_mac_plan_keeps_layers_modeled_slower_dense_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.onnx"), dir.path().join("out.onnx"));
    std::fs::write(&input, model_bytes()).unwrap();
    let slow_layers = |extra: &[&str]| -> usize {
        let report = onnx_report(&input, &output, &[&["--macs", "1.5", "--scheme", "dac"][..], extra].concat());
        let layers = report["plan"]["layers"].as_array().expect("plan.layers");
        let time = |l: &serde_json::Value, key: &str| l[key].as_f64().expect(key);
        let bound = |l: &serde_json::Value| time(l, "time_before_ms") * (1.0 - dac::plan::MIN_TIME_GAIN);
        let factored = layers.iter().filter(|l| !l["rank"].is_null());
        factored.filter(|l| time(l, "time_after_ms") > bound(l) + 1e-9).count()
    };
    assert!(slow_layers(&["--allow-slower"]) > 0, "DAC on 16x16 is modeled slower (else this proves nothing)");
    assert_eq!(slow_layers(&[]), 0);
}
