//! Checkpoint conversion round trips: convert, read back with the safetensors crate, run every
//! converted layer through the reference executor against the original layer.
#![cfg(feature = "safetensors")]

use crate::support::files::{self, decode, small_net, write};
use crate::support::values;
use dac::io::{convert_file, read_records, ConvertOptions, FloatDtype, Precision, SkipReason, SvdMethod};
use dac::{exec, Conv2dWeights, Padding, Rank};
use safetensors::SafeTensors;
use std::collections::HashMap;
use std::path::Path;

/// Layer name -> (groups, rank) converted in the full-rank round trip.
const FULL: [(&str, usize, usize); 3] = [("conv1", 1, 8), ("conv2", 1, 9), ("conv3", 2, 4)];

fn full_rank_options() -> ConvertOptions {
    let mut o = ConvertOptions::new(Rank::Fixed(1)).groups("conv3", 2).allow_slower(true);
    for (name, _, r) in FULL {
        o = o.rank_for(name, r);
    }
    o
}

fn tensor_f64(st: &SafeTensors<'_>, name: &str) -> (Vec<f64>, Vec<usize>, String) {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    let dtype = format!("{:?}", t.dtype());
    (decode(t.data(), &dtype), t.shape().to_vec(), dtype)
}

fn conv(w: Vec<f64>, dims: &[usize], bias: Option<Vec<f64>>, groups: usize, pad: usize) -> Conv2dWeights<f64> {
    Conv2dWeights::builder(w, [dims[0], dims[1], dims[2], dims[3]])
        .maybe_bias(bias)
        .groups(groups)
        .padding(Padding::uniform(pad))
        .build()
        .unwrap()
}

/// Runs each converted layer of `output` against the original in `input`; returns the largest
/// relative difference (max |dense - pair| / max |dense|).
fn max_relative_output_error(input: &Path, output: &Path, layers: &[(&str, usize, usize)]) -> f64 {
    let (ib, ob) = (std::fs::read(input).unwrap(), std::fs::read(output).unwrap());
    let (ist, ost) = (SafeTensors::deserialize(&ib).unwrap(), SafeTensors::deserialize(&ob).unwrap());
    let mut worst: f64 = 0.0;
    for &(name, groups, rank) in layers {
        let (w, dims, _) = tensor_f64(&ist, &format!("{name}.weight"));
        let bias = ist.tensor(&format!("{name}.bias")).ok().map(|_| tensor_f64(&ist, &format!("{name}.bias")).0);
        let dense = conv(w, &dims, bias.clone(), groups, 1);
        let c = dims[1] * groups;
        let (dw, dw_dims, _) = tensor_f64(&ost, &format!("{name}.depthwise.weight"));
        assert_eq!(dw_dims, vec![c * rank, 1, dims[2], dims[3]], "{name} depthwise shape");
        let (pw, pw_dims, _) = tensor_f64(&ost, &format!("{name}.pointwise.weight"));
        assert_eq!(pw_dims, vec![dims[0], c * rank / groups, 1, 1], "{name} pointwise shape");
        let pb = ost
            .tensor(&format!("{name}.pointwise.bias"))
            .ok()
            .map(|_| tensor_f64(&ost, &format!("{name}.pointwise.bias")).0);
        assert_eq!(pb.is_some(), bias.is_some(), "{name}: pointwise bias present iff the layer had one");
        if let (Some(a), Some(b)) = (&pb, &bias) {
            assert_eq!(a, b, "{name}: bias carried unchanged");
        }
        let depthwise = conv(dw, &dw_dims, None, c, 1);
        let pointwise = conv(pw, &pw_dims, pb, groups, 0);
        let x =
            exec::Tensor4::new(values(99, 2 * c * 7 * 6).into_iter().map(f64::from).collect(), [2, c, 7, 6]).unwrap();
        let y = exec::conv2d(&x, &dense).unwrap();
        let z = exec::conv2d(&exec::conv2d(&x, &depthwise).unwrap(), &pointwise).unwrap();
        worst = worst.max(y.max_abs_diff(&z).unwrap() / y.max_abs());
    }
    worst
}

#[test]
fn full_rank_round_trip_reproduces_layers_and_copies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("net.safetensors"), dir.path().join("net-dac.safetensors"));
    write(&input, &small_net("F32"), &[("format", "pt")]);
    let summary = convert_file(&input, &output, &full_rank_options()).unwrap();

    // The summary: three layers converted, the 1x1 conv skipped.
    let names: Vec<_> = summary.converted.iter().map(|l| (l.name.as_str(), l.groups, l.rank)).collect();
    assert_eq!(names.len(), 3);
    for want in FULL {
        assert!(names.contains(&want), "{want:?} in {names:?}");
    }
    for l in &summary.converted {
        assert!(l.relative_error < 1e-5, "{}: {}", l.name, l.relative_error);
        assert_eq!(l.dtype, FloatDtype::F32.name());
    }
    assert_eq!(summary.skipped.len(), 1);
    assert_eq!(summary.skipped[0].name, "down");
    assert_eq!(summary.skipped[0].reason, SkipReason::PointwiseKernel);

    // Outputs equal within the core's f32 tolerance.
    let err = max_relative_output_error(&input, &output, &FULL);
    assert!(err < 1e-4, "max relative output error {err:e}");

    // Untouched tensors byte-identical; converted layers' originals gone.
    let (ib, ob) = (std::fs::read(&input).unwrap(), std::fs::read(&output).unwrap());
    let (ist, ost) = (SafeTensors::deserialize(&ib).unwrap(), SafeTensors::deserialize(&ob).unwrap());
    for name in ["bn1.weight", "bn1.num_batches_tracked", "down.weight", "fc.weight", "fc.bias"] {
        let (a, b) = (ist.tensor(name).unwrap(), ost.tensor(name).unwrap());
        assert_eq!(a.data(), b.data(), "{name}");
        assert_eq!(a.dtype(), b.dtype(), "{name}");
        assert_eq!(a.shape(), b.shape(), "{name}");
    }
    for gone in ["conv1.weight", "conv1.bias", "conv2.weight", "conv3.weight", "conv3.bias"] {
        assert!(ost.tensor(gone).is_err(), "{gone} should be replaced");
    }
    assert_eq!(summary.copied_tensors, 5);

    // Order: the input's, each converted layer's tensors where its weight was.
    let (_, imeta) = SafeTensors::read_metadata(&ib).unwrap();
    let (_, ometa) = SafeTensors::read_metadata(&ob).unwrap();
    let mut expected = Vec::new();
    for n in imeta.offset_keys() {
        match n.strip_suffix(".weight").filter(|l| FULL.iter().any(|f| f.0 == *l)) {
            Some(l) => {
                expected.push(format!("{l}.depthwise.weight"));
                expected.push(format!("{l}.pointwise.weight"));
                if ist.tensor(&format!("{l}.bias")).is_ok() {
                    expected.push(format!("{l}.pointwise.bias"));
                }
            }
            None if n.ends_with(".bias") && FULL.iter().any(|f| n == format!("{}.bias", f.0)) => {}
            None => expected.push(n),
        }
    }
    assert_eq!(ometa.offset_keys(), expected);

    // Metadata as documented.
    let m: &HashMap<String, String> = ometa.metadata().as_ref().unwrap();
    assert_eq!(m["format"], "pt");
    assert_eq!(m["dac.format"], "1");
    assert_eq!(m["dac.version"], env!("CARGO_PKG_VERSION"));
    let rec: serde_json::Value = serde_json::from_str(&m["dac.layer.conv3"]).unwrap();
    assert_eq!(
        rec,
        serde_json::json!({"rank": 4, "groups": 2, "split": "sqrt", "in_channels": 16, "out_channels": 8,
                           "kernel": [3, 3], "bias": true})
    );
    let rec: serde_json::Value = serde_json::from_str(&m["dac.layer.conv2"]).unwrap();
    assert_eq!(rec["bias"], false);
    assert!(!m.contains_key("dac.layer.down"));
    let records = read_records(&output).unwrap();
    assert_eq!(records.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["conv1", "conv2", "conv3"]);
    assert_eq!((records[0].rank, records[0].in_channels, records[0].out_channels), (8, 3, 8));
}

#[test]
fn half_precision_inputs_convert_and_keep_their_dtype() {
    for (dtype, tol) in [("F16", 1e-2), ("BF16", 5e-2)] {
        let dir = tempfile::tempdir().unwrap();
        let (input, output) = (dir.path().join("h.safetensors"), dir.path().join("h-dac.safetensors"));
        write(&input, &small_net(dtype), &[]);
        let summary = convert_file(&input, &output, &full_rank_options()).unwrap();
        assert!(summary.converted.iter().all(|l| l.dtype == dtype));
        let ob = std::fs::read(&output).unwrap();
        let ost = SafeTensors::deserialize(&ob).unwrap();
        for (name, _, _) in FULL {
            for part in ["depthwise.weight", "pointwise.weight"] {
                assert_eq!(format!("{:?}", ost.tensor(&format!("{name}.{part}")).unwrap().dtype()), dtype);
            }
        }
        assert_eq!(format!("{:?}", ost.tensor("conv1.pointwise.bias").unwrap().dtype()), dtype);
        let err = max_relative_output_error(&input, &output, &FULL);
        assert!(err < tol, "{dtype}: max relative output error {err:e}");
    }
}

#[test]
fn f64_precision_and_dtype_override() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("d.safetensors");
    write(&input, &small_net("F64"), &[]);
    let out64 = dir.path().join("d64.safetensors");
    convert_file(&input, &out64, &full_rank_options().precision(Precision::F64)).unwrap();
    let err = max_relative_output_error(&input, &out64, &FULL);
    assert!(err < 1e-10, "f64: {err:e}");

    let out16 = dir.path().join("d16.safetensors");
    let s = convert_file(&input, &out16, &full_rank_options().output_dtype(FloatDtype::F16)).unwrap();
    assert!(s.converted.iter().all(|l| l.dtype == FloatDtype::F16.name()));
    let ob = std::fs::read(&out16).unwrap();
    let ost = SafeTensors::deserialize(&ob).unwrap();
    assert_eq!(format!("{:?}", ost.tensor("conv2.depthwise.weight").unwrap().dtype()), "F16");
    assert_eq!(format!("{:?}", ost.tensor("down.weight").unwrap().dtype()), "F64", "copied tensors keep their dtype");
}

#[test]
fn policies_patterns_and_keep_dense() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    write(&input, &small_net("F32"), &[]);

    // Energy: the smallest rank keeping half the energy; no layer at full rank here.
    let out = dir.path().join("e.safetensors");
    let s = convert_file(&input, &out, &ConvertOptions::new(Rank::Energy(0.5)).groups("conv3", 2)).unwrap();
    for l in &s.converted {
        assert!(l.retained_energy >= 0.5 && l.rank < l.max_rank, "{l:?}");
    }
    assert!(s.macs_after().unwrap() < s.macs_before().unwrap());
    assert!(s.reduction().unwrap() > 1.0);

    // Fixed rank at/above break-even stays dense unless allowed; skip/include patterns.
    let out = dir.path().join("f.safetensors");
    let o = ConvertOptions::new(Rank::Fixed(1)).rank_for("conv2", 9).exclude("conv3").include("conv*").input_size(8, 8);
    let s = convert_file(&input, &out, &o.groups("conv3", 2)).unwrap();
    assert_eq!(s.converted.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["conv1"]);
    let reasons: HashMap<_, _> = s.skipped.iter().map(|l| (l.name.as_str(), l.reason.clone())).collect();
    assert!(matches!(reasons["conv2"], SkipReason::KeptDense { rank: Some(9), .. }), "{reasons:?}");
    assert_eq!(reasons["conv3"], SkipReason::Excluded);
    assert_eq!(reasons["down"], SkipReason::PointwiseKernel);
    // MACs at 8x8 with same padding: conv1 dense = 64 * 8*3*9.
    assert_eq!(s.converted[0].before.unwrap().macs, 64 * 8 * 3 * 9);
    assert_eq!(s.converted[0].after.unwrap().macs, 64 * (3 * 9 + 8 * 3));
    let ob = std::fs::read(&out).unwrap();
    let ib = std::fs::read(&input).unwrap();
    let (ist, ost) = (SafeTensors::deserialize(&ib).unwrap(), SafeTensors::deserialize(&ob).unwrap());
    assert_eq!(ist.tensor("conv2.weight").unwrap().data(), ost.tensor("conv2.weight").unwrap().data());

    // Converting the output again leaves the depthwise halves alone.
    let again = dir.path().join("again.safetensors");
    let s = convert_file(&out, &again, &ConvertOptions::new(Rank::Fixed(1)).groups("conv3", 2)).unwrap();
    let reasons: HashMap<_, _> = s.skipped.iter().map(|l| (l.name.as_str(), l.reason.clone())).collect();
    assert_eq!(reasons["conv1.depthwise"], SkipReason::AlreadyConverted);
}

#[test]
fn both_svd_backends_reproduce_the_layers() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    write(&input, &small_net("F32"), &[]);
    for method in [SvdMethod::Gram, SvdMethod::Nalgebra] {
        let output = dir.path().join(format!("{}.safetensors", method.name()));
        let s = convert_file(&input, &output, &full_rank_options().svd(method)).unwrap();
        assert_eq!(s.svd, if method == SvdMethod::Gram { "gram-jacobi" } else { "nalgebra" });
        let err = max_relative_output_error(&input, &output, &FULL);
        assert!(err < 1e-4, "{method:?}: max relative output error {err:e}");
    }
    // f64 through the Gram backend: exact at full rank to f64 rounding.
    let input64 = dir.path().join("d.safetensors");
    write(&input64, &small_net("F64"), &[]);
    let out = dir.path().join("d-gram.safetensors");
    convert_file(&input64, &out, &full_rank_options().precision(Precision::F64).svd(SvdMethod::Gram)).unwrap();
    let err = max_relative_output_error(&input64, &out, &FULL);
    assert!(err < 1e-10, "f64 gram: {err:e}");
}

/// Layers whose rank needs a spectrum are factored once and kept until written; with no memory
/// budget they are factored again when written. Both give the same file, byte for byte.
#[test]
fn kept_and_refactored_layers_write_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("n.safetensors");
    write(&input, &small_net("F32"), &[("format", "pt")]);
    let cases = [
        ConvertOptions::new(Rank::Energy(0.6)).groups("conv3", 2),
        ConvertOptions::macs(1.5).input_size(8, 8).groups("conv3", 2).rank_for("conv1", 2),
        ConvertOptions::new(Rank::Energy(0.9)).groups("conv3", 2).precision(Precision::F64).allow_slower(true),
    ];
    for (i, options) in cases.iter().enumerate() {
        let kept = dir.path().join(format!("kept{i}.safetensors"));
        let again = dir.path().join(format!("again{i}.safetensors"));
        let a = convert_file(&input, &kept, options).unwrap();
        let b = convert_file(&input, &again, &options.clone().memory_budget(0)).unwrap();
        assert!(!a.converted.is_empty(), "case {i}: something converted");
        assert_eq!(a.converted, b.converted, "case {i}");
        assert_eq!(a.skipped, b.skipped, "case {i}");
        assert_eq!(std::fs::read(&kept).unwrap(), std::fs::read(&again).unwrap(), "case {i}: same bytes");
    }
}

/// Copied tensors go file to file in runs; a run is cut wherever a converted layer's tensors
/// sit between copied ones, and every copied byte lands at its new offset.
#[test]
fn copied_runs_around_converted_layers_are_exact() {
    use files::float;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("runs.safetensors");
    // The reference writer orders data by dtype, then name: d.table (F64) | a.bn.weight |
    // b.weight (converted) | e.bias (moved) | e.weight (converted) | z.weight | the F16 and
    // BF16 tensors: two runs of copied tensors, cut by the converted layers.
    let tensors = vec![
        float("a.bn.weight", "F32", &[7], 1),
        float("b.weight", "F32", &[6, 3, 3, 3], 2),
        float("c.bn.running_mean", "F16", &[5], 3),
        float("d.table", "F64", &[3, 11], 4),
        float("e.weight", "F32", &[4, 6, 3, 3], 5),
        float("f.tail", "BF16", &[9], 6),
        float("z.weight", "F32", &[2, 3], 7),
        float("e.bias", "F32", &[4], 8),
    ];
    write(&input, &tensors, &[]);
    let output = dir.path().join("runs-dac.safetensors");
    let s = convert_file(&input, &output, &ConvertOptions::new(Rank::Fixed(2)).allow_slower(true)).unwrap();
    assert_eq!(s.converted.len(), 2);
    assert_eq!(s.copied_tensors, 5);
    let (ib, ob) = (std::fs::read(&input).unwrap(), std::fs::read(&output).unwrap());
    let (ist, ost) = (SafeTensors::deserialize(&ib).unwrap(), SafeTensors::deserialize(&ob).unwrap());
    for name in ["a.bn.weight", "c.bn.running_mean", "d.table", "f.tail", "z.weight"] {
        assert_eq!(ist.tensor(name).unwrap().data(), ost.tensor(name).unwrap().data(), "{name}");
    }
    assert_eq!(ist.tensor("e.bias").unwrap().data(), ost.tensor("e.pointwise.bias").unwrap().data());
    assert_eq!(ob.len(), 8 + ob_header_len(&ob) + ost.tensors().iter().map(|(_, t)| t.data().len()).sum::<usize>());
}

fn ob_header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// An f32 weight is viewed in place in the mapped input when its bytes are aligned, and decoded
/// into a buffer when they are not: both give the same converted tensors.
#[test]
fn misaligned_weights_convert_like_aligned_ones() {
    let dir = tempfile::tempdir().unwrap();
    let conv = files::float("conv.weight", "F32", &[6, 4, 3, 3], 11);
    // Aligned: written by the safetensors crate.
    let aligned = dir.path().join("aligned.safetensors");
    write(&aligned, std::slice::from_ref(&conv), &[]);
    // Misaligned: a 2-byte F16 tensor first puts the weight at a data offset of 2, and the
    // header is padded to a multiple of 8 bytes, so the weight's file offset is 2 mod 4.
    let misaligned = dir.path().join("misaligned.safetensors");
    let n = conv.data.len();
    let mut header = format!(
        r#"{{"pad":{{"dtype":"F16","shape":[1],"data_offsets":[0,2]}},"conv.weight":{{"dtype":"F32","shape":[6,4,3,3],"data_offsets":[2,{}]}}}}"#,
        2 + n
    );
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut data = vec![0u8, 0];
    data.extend_from_slice(&conv.data);
    files::write_raw(&misaligned, &header, &data);
    let options = ConvertOptions::new(Rank::Fixed(2)).allow_slower(true);
    let mut outputs = Vec::new();
    for input in [&aligned, &misaligned] {
        let out = input.with_extension("out.safetensors");
        convert_file(input, &out, &options).unwrap();
        outputs.push(std::fs::read(&out).unwrap());
    }
    let (a, b) = (SafeTensors::deserialize(&outputs[0]).unwrap(), SafeTensors::deserialize(&outputs[1]).unwrap());
    for name in ["conv.depthwise.weight", "conv.pointwise.weight"] {
        assert_eq!(a.tensor(name).unwrap().data(), b.tensor(name).unwrap().data(), "{name}");
    }
}

/// Every scheme at full rank: the factors named and shaped as the `dac.layer.*` record lists
/// them, run with the record's geometry, reproduce each layer (declared stride included).
#[test]
fn every_scheme_round_trips_through_its_records() {
    use dac::convert::SchemeChoice;
    use dac::scheme::SchemeKind;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("net.safetensors");
    write(&input, &small_net("F32"), &[]);
    let ib = std::fs::read(&input).unwrap();
    let ist = SafeTensors::deserialize(&ib).unwrap();
    for kind in [SchemeKind::Spatial, SchemeKind::Channel, SchemeKind::Decoupled] {
        let output = dir.path().join(format!("{kind}.safetensors"));
        let options = ConvertOptions::new(Rank::Energy(1.0))
            .allow_slower(true)
            .groups("conv3", 2)
            .stride("conv2", 2, 1)
            .scheme(SchemeChoice::Only(kind));
        let summary = convert_file(&input, &output, &options).unwrap();
        // Channel SVD also converts the 1x1 `down` (the others cannot reduce a 1x1 kernel).
        let want = if kind == SchemeKind::Channel { 4 } else { 3 };
        assert_eq!(summary.converted.len(), want, "{kind}");
        let ob = std::fs::read(&output).unwrap();
        let ost = SafeTensors::deserialize(&ob).unwrap();
        for record in read_records(&output).unwrap() {
            assert_eq!(record.scheme, kind.name());
            assert_eq!(record.split, None);
            let name = &record.name;
            let (w, dims, _) = tensor_f64(&ist, &format!("{name}.weight"));
            let bias = ist.tensor(&format!("{name}.bias")).ok().map(|_| tensor_f64(&ist, &format!("{name}.bias")).0);
            let stride = if name == "conv2" { (2, 1) } else { (1, 1) };
            let dense = Conv2dWeights::builder(w, [dims[0], dims[1], dims[2], dims[3]])
                .maybe_bias(bias.clone())
                .groups(record.groups)
                .stride(stride.0, stride.1)
                .padding(Padding::uniform(dims[2] / 2))
                .build()
                .unwrap();
            let last = record.factors.len() - 1;
            let factors: Vec<Conv2dWeights<f64>> = record
                .factors
                .iter()
                .enumerate()
                .map(|(k, f)| {
                    let (v, shape, _) = tensor_f64(&ost, &format!("{name}.{}.weight", f.role));
                    assert_eq!(shape, f.shape.to_vec(), "{kind} {name} {}", f.role);
                    let b =
                        (k == last && bias.is_some()).then(|| tensor_f64(&ost, &format!("{name}.{}.bias", f.role)).0);
                    let [t, b_, l, r] = f.padding;
                    Conv2dWeights::builder(v, f.shape)
                        .maybe_bias(b)
                        .groups(f.groups)
                        .stride(f.stride[0], f.stride[1])
                        .dilation(f.dilation[0], f.dilation[1])
                        .padding(Padding { top: t, bottom: b_, left: l, right: r })
                        .build()
                        .unwrap()
                })
                .collect();
            let c = dims[1] * record.groups;
            let x = exec::Tensor4::new(values(7, 2 * c * 9 * 8).into_iter().map(f64::from).collect(), [2, c, 9, 8])
                .unwrap();
            let y = exec::conv2d(&x, &dense).unwrap();
            let z = factors.iter().fold(x, |x, f| exec::conv2d(&x, f).unwrap());
            let err = y.max_abs_diff(&z).unwrap() / y.max_abs();
            assert!(err < 1e-4, "{kind} {name}: {err:e}");
        }
    }
}
