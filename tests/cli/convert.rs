//! The `dac` binary: JSON and table output, exit codes, and every bad input of the issue.
#![cfg(feature = "cli")]

use crate::support::cli::dac;
use crate::support::files::{make, small_net, write};
use std::path::Path;
use std::process::Output;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn inspect_never_adds_per_position_counts_to_sized_ones() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    write(&input, &small_net("F32"), &[]);
    // One layer sized, the others not: their counts are per output position.
    let o = dac(&["inspect", s(&input), "--layer-input", "conv1=8x8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("total MACs unknown: no input size for 3 of them"), "{out}");
    assert!(out.contains("/position"), "{out}");
    let o = dac(&["inspect", s(&input), "--layer-input", "conv1=8x8", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["total_macs"].is_null(), "{v}");
    // With every size known the total is their sum.
    let o = dac(&["inspect", s(&input), "--input", "8x8", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let sum: u64 = v["layers"].as_array().unwrap().iter().map(|l| l["macs"].as_u64().unwrap()).sum();
    assert_eq!(v["total_macs"], sum);
}

#[test]
fn what_is_not_counted_is_named() {
    use crate::support::files::float;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    let t = [
        float("enc.weight", "F32", &[16, 3, 3, 3], 1),
        float("up.weight", "F32", &[16, 8, 2, 2], 2),
        float("up.bias", "F32", &[8], 3),
        float("c1d.weight", "F32", &[4, 8, 3], 4),
    ];
    write(&input, &t, &[]);
    let sidecar = dir.path().join("g.json");
    std::fs::write(&sidecar, r#"{"layers": {"up": {"transposed": true}}}"#).unwrap();
    let output = dir.path().join("o.safetensors");
    let o = dac(&["convert", s(&input), "-o", s(&output), "--rank", "2", "--input", "8x8", "--geometry", s(&sidecar)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("not counted: c1d.weight [4, 8, 3]"), "{out}");
    assert!(out.contains("2-D convolutions and linear layers only"), "{out}");
    assert!(out.contains("a transposed convolution (declared)"), "{out}");
    let o = dac(&["inspect", s(&input), "--input", "8x8", "--geometry", s(&sidecar)]);
    let out = stdout(&o);
    assert!(out.contains("not convertible:") && out.contains("transposed (declared)"), "{out}");
    assert!(out.contains("2 convolution(s) (1 not convertible)"), "{out}");
    assert!(out.contains("not counted: c1d.weight"), "{out}");
    // Undeclared, the transposed layer's bias is an error that says what to declare.
    let o = dac(&["inspect", s(&input), "--input", "8x8"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("\"transposed\": true"), "{}", stderr(&o));
}

#[test]
fn inspect_json_lists_every_convolution() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    write(&input, &small_net("F32"), &[]);
    let o = dac(&["inspect", s(&input), "--input", "8x8", "--groups", "conv3=2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["input_size"], serde_json::json!([8, 8]));
    let layers = v["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 4);
    for n in ["conv1", "conv2", "conv3", "down"] {
        assert!(names.contains(&n), "{names:?}");
    }
    let conv3 = layers.iter().find(|l| l["name"] == "conv3").unwrap();
    assert_eq!(conv3["shape"], serde_json::json!([8, 8, 3, 3]));
    assert_eq!(conv3["groups"], 2);
    assert_eq!(conv3["max_rank"], 4);
    assert_eq!(conv3["retained_energy"].as_array().unwrap().len(), 4);
    assert_eq!(conv3["macs"], 64 * 8 * 8 * 9);
    let conv1 = layers.iter().find(|l| l["name"] == "conv1").unwrap();
    let energy: Vec<f64> = conv1["retained_energy"].as_array().unwrap().iter().map(|e| e.as_f64().unwrap()).collect();
    assert_eq!(energy.len(), 5);
    assert!(energy.windows(2).all(|w| w[0] <= w[1]) && energy[4] <= 1.0);
    let be = conv1["break_even_rank"].as_f64().unwrap();
    assert!((be - 72.0 / 17.0).abs() < 1e-12);

    // Both SVD backends report the same spectra.
    let o = dac(&["inspect", s(&input), "--input", "8x8", "--groups", "conv3=2", "--svd", "nalgebra", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let w: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for (a, b) in layers.iter().zip(w["layers"].as_array().unwrap()) {
        assert_eq!(a["name"], b["name"]);
        for (x, y) in a["retained_energy"].as_array().unwrap().iter().zip(b["retained_energy"].as_array().unwrap()) {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() < 1e-5, "{}: {x} vs {y}", a["name"]);
        }
    }

    // The table names every layer and the columns.
    let o = dac(&["inspect", s(&input)]);
    assert!(o.status.success());
    let out = stdout(&o);
    for needle in ["layer", "break-even", "energy r=1", "r=5", "MACs/position", "conv1", "conv3", "down", "same"] {
        assert!(out.contains(needle), "`{needle}` missing:\n{out}");
    }
}

#[test]
fn convert_json_summary_and_table() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    write(&input, &small_net("F32"), &[]);
    let output = dir.path().join("o.safetensors");
    // The same conversion into `out`, with `extra` arguments.
    let convert = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "convert",
            s(&input),
            "-o",
            s(out),
            "--rank",
            "2",
            "--rank-for",
            "conv2=9",
            "--groups",
            "conv3=2",
            "--input",
            "8x8",
            "--json",
        ];
        args.extend_from_slice(extra);
        dac(&args)
    };
    let o = convert(&output, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let converted: Vec<(&str, u64)> = v["converted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["rank"].as_u64().unwrap()))
        .collect();
    assert_eq!(converted, [("conv1", 2), ("conv3", 2)]);
    let skipped: Vec<(&str, &str)> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["name"].as_str().unwrap(), l["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped.iter().any(|(n, r)| *n == "conv2" && r.contains("break-even")), "{skipped:?}");
    assert!(skipped.iter().any(|(n, r)| *n == "down" && r.contains("1x1")), "{skipped:?}");
    let conv1 = &v["converted"][0];
    assert_eq!(conv1["macs_before"], 64 * 8 * 3 * 9);
    assert_eq!(conv1["macs_after"], 64 * (3 * 2 * 9 + 8 * 3 * 2));
    assert!(conv1["relative_error"].as_f64().unwrap() > 0.0);
    let total = &v["total"];
    assert!(total["macs_after"].as_u64().unwrap() < total["macs_before"].as_u64().unwrap());
    assert!(total["reduction"].as_f64().unwrap() > 1.0);
    assert_eq!(v["svd"], "gram-jacobi", "the fast backend by default");
    assert!(output.exists());

    // --svd nalgebra: the same layers and ranks, the other backend named.
    let nalgebra = dir.path().join("nalgebra.safetensors");
    let o = convert(&nalgebra, &["--svd", "nalgebra"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let w: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(w["svd"], "nalgebra");
    for (a, b) in v["converted"].as_array().unwrap().iter().zip(w["converted"].as_array().unwrap()) {
        assert_eq!((&a["name"], &a["rank"]), (&b["name"], &b["rank"]));
        let (ea, eb) = (a["relative_error"].as_f64().unwrap(), b["relative_error"].as_f64().unwrap());
        assert!((ea - eb).abs() <= 1e-4 * ea.max(1e-6), "{}: {ea} vs {eb}", a["name"]);
    }
    let o = dac(&["convert", s(&input), "-o", s(&nalgebra), "--rank", "2", "--svd", "lapack", "--force"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("gram") && stderr(&o).contains("nalgebra"), "{}", stderr(&o));

    // --allow-slower converts conv2 too; the table lists layers and the total.
    let o = dac(&[
        "convert",
        s(&input),
        "-o",
        s(&output),
        "--rank",
        "2",
        "--rank-for",
        "conv2=9",
        "--allow-slower",
        "--force",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for needle in ["conv1", "2/8", "conv2", "9/9", "left dense", "down", "total:", "wrote"] {
        assert!(out.contains(needle), "`{needle}` missing:\n{out}");
    }
    assert!(stderr(&o).is_empty(), "no progress bar when stderr is not a terminal: {}", stderr(&o));

    // --quiet prints nothing.
    let o = dac(&["convert", s(&input), "-o", s(&output), "--energy", "0.5", "--force", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

#[test]
fn help_has_examples_and_usage_errors_fail() {
    for args in [&["--help"][..], &["convert", "--help"], &["inspect", "--help"]] {
        let o = dac(args);
        assert!(o.status.success());
        assert!(stdout(&o).contains("Examples:"), "{args:?}");
    }
    let o = dac(&["convert", "a.safetensors", "-o", "b.safetensors"]);
    assert!(!o.status.success(), "--rank or --energy is required");
    let o = dac(&["convert", "a.safetensors", "-o", "b.safetensors", "--rank", "1", "--energy", "0.5"]);
    assert!(!o.status.success(), "--rank and --energy conflict");
    let o = dac(&["inspect", "a.safetensors", "--input", "0x3"]);
    assert!(!o.status.success());
}

#[test]
fn every_bad_input_fails_with_one_line_and_writes_nothing() {
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("truncated_data", &[], &["run past the end", "truncated"]),
        ("truncated_header", &[], &["header", "truncated"]),
        ("header_past_end", &[], &["header", "runs past the end of the file"]),
        ("overlap", &[], &["tensor `b.weight`", "overlap"]),
        ("past_end", &[], &["tensor `conv.weight`", "run past the end"]),
        ("not_json", &[], &["header", "not valid JSON"]),
        ("unknown_dtype", &[], &["tensor `conv.weight`", "unsupported dtype `Q4`"]),
        ("int_conv", &[], &["tensor `conv.weight`", "dtype I32"]),
        ("bias_length", &[], &["tensor `conv.bias`"]),
        ("nan", &[], &["layer `conv`", "NaN"]),
        ("no_match_layers", &["--layers", "nope*"], &["--layers", "`nope*`"]),
        ("no_match_skip", &["--skip", "x"], &["--skip", "`x`"]),
        ("rank_zero", &["--rank-for", "conv=0"], &["layer `conv`", "rank 0"]),
        ("rank_zero_global", &["--rank", "0"], &["layer `conv`", "rank 0", "1..=4"]),
        ("no_match_layer_input", &["--layer-input", "w=4x4"], &["--layer-input", "`w`"]),
        ("bad_groups", &["--groups", "conv=3"], &["layer `conv`", "groups = 3"]),
    ];
    for (name, extra, expect) in cases {
        let dir = tempfile::tempdir().unwrap();
        let input = make(dir.path(), name);
        let output = dir.path().join("out.safetensors");
        let mut args = vec!["convert", s(&input), "-o", s(&output)];
        if !extra.contains(&"--rank") {
            args.extend(["--rank", "1"]);
        }
        args.extend(extra.iter().copied());
        let o = dac(&args);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.starts_with("error: ") && err.ends_with('\n') && err.lines().count() == 1, "{name}: {err:?}");
        assert!(err.contains(s(&input)), "{name}: file not named: {err}");
        for part in *expect {
            assert!(err.contains(part), "{name}: `{part}` missing from {err}");
        }
        assert!(o.stdout.is_empty(), "{name}");
        assert!(!output.exists(), "{name}: output written");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "{name}: files left behind");
    }

    // Output naming the input, and an existing output without --force.
    let dir = tempfile::tempdir().unwrap();
    let input = make(dir.path(), "good");
    let o = dac(&["convert", s(&input), "-o", s(&input), "--rank", "1", "--force"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is the input file"), "{}", stderr(&o));
    let output = dir.path().join("exists.safetensors");
    std::fs::write(&output, b"old").unwrap();
    let o = dac(&["convert", s(&input), "-o", s(&output), "--rank", "1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&output).unwrap(), b"old");
    let o = dac(&["inspect", s(&dir.path().join("missing.safetensors"))]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing.safetensors"));
}

/// `--stride`, `--padding`, `--dilation` and `--geometry FILE` declare what a checkpoint cannot
/// say; `inspect` shows what it assumed for every layer, and the counts follow.
#[test]
fn geometry_flags_and_sidecar_reach_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let input = crate::support::files::stack(dir.path());
    let o = dac(&["inspect", s(&input), "--input", "16x16", "--stride", "c1=2", "--padding", "c2=0", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let layer = |name: &str| doc["layers"].as_array().unwrap().iter().find(|l| l["name"] == name).unwrap().clone();
    assert_eq!(layer("c1")["stride"], serde_json::json!([2, 2]));
    assert_eq!(layer("c1")["macs"], 32 * 16 * 9 * 8 * 8);
    assert_eq!(layer("c2")["padding"], serde_json::json!([0, 0, 0, 0]));
    assert_eq!(layer("c2")["macs"], 64 * 32 * 9 * 14 * 14);
    assert_eq!(layer("c0")["stride"], serde_json::json!([1, 1]));
    assert_eq!(layer("c0")["size"], "default");
    // A sidecar: sizes declared per layer.
    let sidecar = dir.path().join("g.json");
    std::fs::write(&sidecar, r#"{"input": [16, 16], "layers": {"c3": {"stride": 2, "input": [8, 8]}}}"#).unwrap();
    let out = dir.path().join("out.safetensors");
    let o = dac(&["convert", s(&input), "-o", s(&out), "--rank", "2", "--geometry", s(&sidecar), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let c3 = doc["converted"].as_array().unwrap().iter().find(|l| l["name"] == "c3").unwrap();
    assert_eq!(c3["macs_before"], 64 * 64 * 9 * 4 * 4);
    assert_eq!(c3["size"], "declared");
    // A bad declaration is one line naming the flag's value.
    let o = dac(&["inspect", s(&input), "--stride", "c1=0"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn split_and_dtype_flags_write_what_the_library_writes() {
    use dac::io::{convert_file, ConvertOptions, FloatDtype};
    use dac::{Rank, Split};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    write(&input, &small_net("F32"), &[]);
    let cases = [
        ("pointwise", "f16", Split::Pointwise, FloatDtype::F16),
        ("depthwise", "bf16", Split::Depthwise, FloatDtype::BF16),
        ("sqrt", "f64", Split::SquareRoot, FloatDtype::F64),
    ];
    for (split, dtype, s_lib, d_lib) in cases {
        let (cli, lib) = (dir.path().join(format!("{split}-cli.st")), dir.path().join(format!("{split}-lib.st")));
        let o = dac(&[
            "convert",
            s(&input),
            "-o",
            s(&cli),
            "--rank",
            "2",
            "--groups",
            "conv3=2",
            "--split",
            split,
            "--dtype",
            dtype,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let options = ConvertOptions::new(Rank::Fixed(2)).groups("conv3", 2).split(s_lib).output_dtype(d_lib);
        convert_file(&input, &lib, &options).unwrap();
        assert_eq!(std::fs::read(&cli).unwrap(), std::fs::read(&lib).unwrap(), "--split {split} --dtype {dtype}");
    }
}

/// Runs `script` as root of its own user and mount namespaces (`unshare -rm`), where it can
/// mount small file systems that vanish with it; returns its output.
fn in_namespace(script: &str, args: &[&str]) -> Output {
    let out = std::process::Command::new("unshare")
        .args(["-rm", "sh", "-c", script, "sh"])
        .args(args)
        .output()
        .expect("unshare (util-linux) runs");
    assert!(out.status.success(), "the namespace script failed: {}", stderr(&out));
    out
}

#[test]
fn output_failures_leave_the_input_untouched_and_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    write(&input, &small_net("F32"), &[]);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/zoo/resnet18.onnx");
    let (ck_before, model_before) = (std::fs::read(&input).unwrap(), std::fs::read(&model).unwrap());
    // A full file system (one 4 KiB page; every output is larger) and a read-only one.
    let script = r#"
        set -u
        D=$1; DAC=$2; CK=$3; MODEL=$4
        mkdir -p "$D/full" "$D/ro"
        mount -t tmpfs -o size=4k tmpfs "$D/full" && mount -t tmpfs -o ro tmpfs "$D/ro" || exit 90
        for T in full ro; do
            "$DAC" convert "$CK" -o "$D/$T/out.safetensors" --rank 2 --groups conv3=2 2>&1; echo "convert $T exit=$?"
            "$DAC" onnx "$MODEL" -o "$D/$T/out.onnx" --rank 2 2>&1; echo "onnx $T exit=$?"
            echo "$T left=$(ls -A "$D/$T" | wc -l)"
        done
    "#;
    let d = dir.path().join("mnt");
    let out = in_namespace(script, &[s(&d), env!("CARGO_BIN_EXE_dac"), s(&input), s(&model)]);
    let text = stdout(&out);
    for line in
        ["convert full exit=1", "onnx full exit=1", "full left=0", "convert ro exit=1", "onnx ro exit=1", "ro left=0"]
    {
        assert!(text.contains(line), "{line}:\n{text}");
    }
    assert!(text.contains("No space left on device") && text.contains("Read-only file system"), "{text}");
    // A rename that fails: the output is a directory (--force lets the run reach the rename).
    let target = dir.path().join("a-directory");
    std::fs::create_dir(&target).unwrap();
    let o = dac(&["convert", s(&input), "-o", s(&target), "--rank", "2", "--groups", "conv3=2", "--force"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("rename"), "{}", stderr(&o));
    let mut left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    left.sort();
    assert_eq!(left, ["a-directory", "mnt", "n.safetensors"], "no temporary file left");
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);
    assert_eq!(std::fs::read(&input).unwrap(), ck_before, "the input is untouched");
    assert_eq!(std::fs::read(&model).unwrap(), model_before);
}
