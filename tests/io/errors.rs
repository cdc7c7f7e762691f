//! Bad input through the library: a one-line error naming the file and the tensor, and no
//! output file (nor temporary file) left behind.
#![cfg(feature = "safetensors")]

use crate::support::files::{self, make};
use crate::support::values;
use dac::io::{convert_file, inspect_file, ConvertOptions, InspectOptions};
use dac::Rank;
use safetensors::SafeTensors;
use std::path::Path;

/// The bad inputs of the issue, each as (file name, writer, options, substrings of the message).
pub struct Case {
    pub name: &'static str,
    pub options: ConvertOptions,
    pub expect: &'static [&'static str],
}

/// Every bad-input case: input kind, options, expected message parts.
pub fn cases() -> Vec<Case> {
    let r = || ConvertOptions::new(Rank::Fixed(1));
    vec![
        Case { name: "truncated_data", options: r(), expect: &["tensor `", "run past the end", "truncated"] },
        Case { name: "truncated_header", options: r(), expect: &["header", "truncated"] },
        Case { name: "header_past_end", options: r(), expect: &["header", "runs past the end of the file"] },
        Case { name: "overlap", options: r(), expect: &["tensor `b.weight`", "overlap", "a.weight"] },
        Case { name: "past_end", options: r(), expect: &["tensor `conv.weight`", "run past the end"] },
        Case { name: "not_json", options: r(), expect: &["header", "not valid JSON"] },
        Case { name: "gap", options: r(), expect: &["tensor `b.weight`", "a gap"] },
        Case { name: "trailing", options: r(), expect: &["header", "trailing bytes"] },
        Case { name: "not_utf8", options: r(), expect: &["header", "not UTF-8"] },
        Case { name: "not_object", options: r(), expect: &["header", "not a JSON object"] },
        Case { name: "metadata_not_object", options: r(), expect: &["`__metadata__` is not a JSON object"] },
        Case { name: "metadata_not_string", options: r(), expect: &["`__metadata__` entry `format` is not a string"] },
        Case { name: "header_limit", options: r(), expect: &["header", "200000000", "exceeds the limit"] },
        Case { name: "shape_overflow", options: r(), expect: &["tensor `conv.weight`", "overflows"] },
        Case { name: "byte_count", options: r(), expect: &["tensor `conv.weight`", "[4]", "8"] },
        Case { name: "unknown_dtype", options: r(), expect: &["tensor `conv.weight`", "unsupported dtype `Q4`"] },
        Case { name: "int_conv", options: r(), expect: &["tensor `conv.weight`", "dtype I32 is not supported"] },
        Case { name: "bias_length", options: r(), expect: &["tensor `conv.bias`", "[3]", "[4]"] },
        Case { name: "nan", options: r(), expect: &["layer `conv`", "weight[5] = NaN"] },
        // Library errors name the option (the CLI maps them to its flags).
        Case { name: "no_match_layers", options: r().include("nope*"), expect: &["include", "`nope*`", "conv"] },
        Case { name: "no_match_skip", options: r().exclude("x"), expect: &["exclude", "`x`"] },
        Case { name: "no_match_rank_for", options: r().rank_for("y", 1), expect: &["rank_for", "`y`"] },
        Case { name: "no_match_groups", options: r().groups("z", 2), expect: &["groups", "`z`"] },
        Case { name: "no_match_layer_input", options: r().layer_input("w", 4, 4), expect: &["layer_input", "`w`"] },
        Case { name: "rank_zero", options: r().rank_for("conv", 0), expect: &["layer `conv`", "rank 0", "1..=4"] },
        Case { name: "bad_groups", options: r().groups("conv", 3), expect: &["layer `conv`", "groups = 3"] },
        Case { name: "bad_energy", options: ConvertOptions::new(Rank::Energy(1.5)), expect: &["energy = 1.5"] },
    ]
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    v.sort();
    v
}

#[test]
fn every_bad_input_names_file_and_tensor_and_writes_nothing() {
    for case in cases() {
        let dir = tempfile::tempdir().unwrap();
        let input = make(dir.path(), case.name);
        let before = entries(dir.path());
        let output = dir.path().join("out.safetensors");
        let err = convert_file(&input, &output, &case.options).expect_err(case.name).to_string();
        assert!(err.contains(&input.display().to_string()), "{}: message does not name the file: {err}", case.name);
        for part in case.expect {
            assert!(err.contains(part), "{}: `{part}` missing from: {err}", case.name);
        }
        assert!(!err.contains('\n'), "{}: not one line: {err}", case.name);
        assert!(!output.exists(), "{}: output written", case.name);
        assert_eq!(entries(dir.path()), before, "{}: files left behind", case.name);
    }
}

#[test]
fn inspect_reports_the_same_file_errors() {
    for name in ["truncated_data", "overlap", "not_json", "unknown_dtype", "int_conv", "bias_length"] {
        let dir = tempfile::tempdir().unwrap();
        let input = make(dir.path(), name);
        let err = inspect_file(&input, &InspectOptions::new()).expect_err(name).to_string();
        assert!(err.contains(&input.display().to_string()), "{name}: {err}");
    }
    let err = inspect_file("/nonexistent/x.safetensors", &InspectOptions::new()).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/x.safetensors") && err.contains("cannot open"), "{err}");
}

#[test]
fn output_must_differ_from_input_and_exist_only_with_force() {
    let dir = tempfile::tempdir().unwrap();
    let input = make(dir.path(), "good");
    let original = std::fs::read(&input).unwrap();
    let opts = ConvertOptions::new(Rank::Fixed(1));

    // Same path, spelled differently, and a hard link (same inode).
    let err = convert_file(&input, &input, &opts.clone().force(true)).unwrap_err().to_string();
    assert!(err.contains("is the input file"), "{err}");
    let dotted = dir.path().join(".").join("good.safetensors");
    let err = convert_file(&input, &dotted, &opts.clone().force(true)).unwrap_err().to_string();
    assert!(err.contains("is the input file"), "{err}");
    #[cfg(unix)]
    {
        let link = dir.path().join("link.safetensors");
        std::fs::hard_link(&input, &link).unwrap();
        let err = convert_file(&input, &link, &opts.clone().force(true)).unwrap_err().to_string();
        assert!(err.contains("is the input file"), "{err}");
        std::fs::remove_file(&link).unwrap();
    }
    assert_eq!(std::fs::read(&input).unwrap(), original, "input modified");

    // An existing output is kept unless forced.
    let output = dir.path().join("out.safetensors");
    std::fs::write(&output, b"keep me").unwrap();
    let err = convert_file(&input, &output, &opts).unwrap_err().to_string();
    assert!(err.contains("already exists") && err.contains("out.safetensors"), "{err}");
    assert_eq!(std::fs::read(&output).unwrap(), b"keep me");
    convert_file(&input, &output, &opts.clone().force(true)).unwrap();
    assert_ne!(std::fs::read(&output).unwrap(), b"keep me");
    assert_eq!(entries(dir.path()), ["good.safetensors", "out.safetensors"]);

    // A failed forced run leaves the existing output alone.
    std::fs::write(&output, b"keep me").unwrap();
    let err = convert_file(&input, &output, &opts.clone().force(true).rank_for("conv", 0)).unwrap_err();
    assert!(err.to_string().contains("rank 0"));
    assert_eq!(std::fs::read(&output).unwrap(), b"keep me");

    // A missing output directory is an I/O error naming it.
    let err = convert_file(&input, dir.path().join("no/such/dir/o.safetensors"), &opts).unwrap_err().to_string();
    assert!(err.contains("no/such/dir"), "{err}");
}

/// A NaN or an infinity in a converted weight is reported as such (the element's index and
/// value) on every path: f32 read in place (the fast backend finds it during factorisation),
/// f64 precision, f16 decoded, 5x5 kernels, whole and partial blocks of eight channels, every
/// policy that factors first, `inspect`, and the nalgebra backend (which scans first).
#[test]
fn non_finite_weights_are_named_on_every_path() {
    use dac::io::{Precision, SvdMethod};
    // (dims, index of the bad value)
    let shapes: [([usize; 4], usize); 3] =
        [([16, 8, 3, 3], 8 * 9 * 3 + 5 * 9 + 4), ([4, 11, 3, 3], 10 * 9 + 8), ([6, 3, 5, 5], 77)];
    for (dims, index) in shapes {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for dtype in ["F32", "F16"] {
                let dir = tempfile::tempdir().unwrap();
                let input = dir.path().join("in.safetensors");
                let mut v = values(3, dims.iter().product());
                v[index] = bad;
                let t = files::T {
                    name: "conv.weight".into(),
                    dtype: dtype.into(),
                    shape: dims.to_vec(),
                    data: files::encode(&v, dtype),
                };
                files::write(&input, &[t], &[]);
                let shown = if bad.is_nan() { "NaN".to_string() } else { format!("{}", f64::from(bad)) };
                let expect = format!("weight[{index}] = {shown}");
                let output = dir.path().join("out.safetensors");
                let policies = [Rank::Fixed(1), Rank::Energy(0.9)];
                for (policy, precision, svd) in policies.iter().flat_map(|&p| {
                    [Precision::F32, Precision::F64]
                        .into_iter()
                        .flat_map(move |pr| [SvdMethod::Gram, SvdMethod::Nalgebra].map(|s| (p, pr, s)))
                }) {
                    let options = ConvertOptions::new(policy).precision(precision).svd(svd);
                    let what = format!("{dims:?} {bad} {dtype} {policy:?} {precision:?} {svd:?}");
                    let err = convert_file(&input, &output, &options).expect_err(&what).to_string();
                    assert!(err.contains("layer `conv`") && err.contains(&expect), "{what}: {err}");
                    assert!(!output.exists(), "{what}: output written");
                    let inspect = InspectOptions::new().precision(precision).svd(svd);
                    let err = inspect_file(&input, &inspect).expect_err(&what).to_string();
                    assert!(err.contains(&expect), "{what}: inspect: {err}");
                }
            }
        }
    }
}

/// A fixed rank above a layer's maximum leaves the layer dense (the same rule as for ONNX: a
/// network routinely holds layers of different maximum ranks), and says why.
#[test]
fn rank_above_the_maximum_leaves_the_layer_dense() {
    let dir = tempfile::tempdir().unwrap();
    let input = make(dir.path(), "good");
    let output = dir.path().join("out.safetensors");
    let s = convert_file(&input, &output, &ConvertOptions::new(Rank::Fixed(1)).rank_for("conv", 10)).unwrap();
    assert!(s.converted.is_empty(), "{s:?}");
    let conv = s.skipped.iter().find(|l| l.name == "conv").expect("conv listed");
    assert_eq!(conv.reason, dac::convert::SkipReason::RankAboveMaximum { rank: 10, max: 4 });
    assert!(conv.reason.to_string().contains("maximum rank 4"), "{}", conv.reason);
    // Every tensor copied bit for bit.
    let (ib, ob) = (std::fs::read(&input).unwrap(), std::fs::read(&output).unwrap());
    let (i, o) = (SafeTensors::deserialize(&ib).unwrap(), SafeTensors::deserialize(&ob).unwrap());
    for name in ["conv.weight", "conv.bias"] {
        assert_eq!(i.tensor(name).unwrap().data(), o.tensor(name).unwrap().data(), "{name}");
    }
}

#[test]
fn a_malformed_layer_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let input = make(dir.path(), "bad_record");
    let err = dac::io::read_records(&input).unwrap_err().to_string();
    assert!(err.contains("dac.layer.conv") && err.contains("not a dac layer record"), "{err}");
    assert!(err.contains(&input.display().to_string()), "{err}");
}
