//! Output data types and where the singular values go: F16/BF16 outputs are the f32 result
//! rounded, a value that overflows the output type is an error that leaves nothing behind, and
//! every split reproduces the same layer.
#![cfg(feature = "safetensors")]

use crate::support::files::{decode, small_net, write, T};
use dac::io::{convert_file, ConvertOptions, FloatDtype};
use dac::{Error, Rank, Split};
use safetensors::SafeTensors;
use std::path::Path;

/// Every tensor of a checkpoint as (dtype, f64 values), by name.
fn tensors(path: &Path) -> Vec<(String, String, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, String, Vec<f64>)> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let dtype = format!("{:?}", t.dtype());
            let values =
                if ["F32", "F64", "F16", "BF16"].contains(&dtype.as_str()) { decode(t.data(), &dtype) } else { vec![] };
            (name, dtype, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn options() -> ConvertOptions {
    ConvertOptions::new(Rank::Fixed(2)).groups("conv3", 2)
}

#[test]
fn half_outputs_are_the_f32_result_rounded() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    write(&input, &small_net("F32"), &[]);
    let reference = dir.path().join("f32.safetensors");
    convert_file(&input, &reference, &options()).unwrap();
    let want = tensors(&reference);
    for (dtype, name) in [(FloatDtype::F16, "F16"), (FloatDtype::BF16, "BF16")] {
        let out = dir.path().join(format!("{name}.safetensors"));
        let summary = convert_file(&input, &out, &options().output_dtype(dtype)).unwrap();
        assert_eq!(summary.converted.len(), 3);
        let got = tensors(&out);
        assert_eq!(got.len(), want.len());
        for ((n, dt, v), (wn, wdt, wv)) in got.iter().zip(&want) {
            assert_eq!(n, wn);
            let converted = summary.converted.iter().any(|l| n.starts_with(&format!("{}.", l.name)));
            if !converted {
                assert_eq!((dt, v), (wdt, wv), "{n}: copied unchanged");
                continue;
            }
            assert_eq!(dt, name, "{n}");
            for (i, (&g, &w)) in v.iter().zip(wv).enumerate() {
                // Round-to-nearest-even of the f32 value: nothing else changes.
                let rounded = match dtype {
                    FloatDtype::F16 => half::f16::from_f64(w).to_f64(),
                    _ => half::bf16::from_f64(w).to_f64(),
                };
                assert_eq!(g, rounded, "{n}[{i}] in {name}: {g} is not {w} rounded");
            }
        }
    }
}

#[test]
fn a_value_overflowing_the_output_type_is_an_error_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.safetensors");
    // Weights near 1e5: factors with all of s on the pointwise side exceed F16's 65504.
    let big: Vec<f32> = (0..8 * 4 * 9).map(|i| 1e5 * (1.0 + (i % 7) as f32 / 10.0)).collect();
    let t = T {
        name: "conv.weight".into(),
        dtype: "F32".into(),
        shape: vec![8, 4, 3, 3],
        data: crate::support::files::encode(&big, "F32"),
    };
    write(&input, &[t], &[]);
    let before = std::fs::read(&input).unwrap();
    let out = dir.path().join("out.safetensors");
    let pointwise = || ConvertOptions::new(Rank::Fixed(2)).split(Split::Pointwise);
    let err = convert_file(&input, &out, &pointwise().output_dtype(FloatDtype::F16)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert!(text.contains("conv.pointwise.weight") && text.contains("overflows F16"), "{text}");
    assert_eq!(std::fs::read(&input).unwrap(), before, "the input is untouched");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("big.safetensors")], "nothing written");
    // BF16's range holds it.
    convert_file(&input, &out, &pointwise().output_dtype(FloatDtype::BF16)).unwrap();
}

#[test]
fn every_split_writes_the_same_layer() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    write(&input, &small_net("F64"), &[]);
    let mut products = Vec::new();
    for split in [Split::SquareRoot, Split::Pointwise, Split::Depthwise] {
        let out = dir.path().join(format!("{split:?}.safetensors"));
        convert_file(&input, &out, &options().split(split)).unwrap();
        let t = tensors(&out);
        let get = |name: &str| t.iter().find(|x| x.0 == name).unwrap().2.clone();
        // conv2 [16, 8, 3, 3] at rank 2: W[n, c, tap] = Σ_j P[n, 2c + j] D[2c + j, tap].
        let (d, p) = (get("conv2.depthwise.weight"), get("conv2.pointwise.weight"));
        let w: Vec<f64> = (0..16 * 8 * 9)
            .map(|i| {
                let (n, c, tap) = (i / 72, i / 9 % 8, i % 9);
                (0..2).map(|j| p[n * 16 + 2 * c + j] * d[(2 * c + j) * 9 + tap]).sum()
            })
            .collect();
        products.push((split, d, w));
    }
    let (_, d0, w0) = &products[0];
    for (split, d, w) in &products[1..] {
        let diff = w.iter().zip(w0).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        // The same layer up to f32 rounding (the factors are computed in f32).
        assert!(diff < 1e-6, "{split:?}: the product differs by {diff}");
        assert!(d.iter().zip(d0).any(|(a, b)| (a - b).abs() > 1e-2), "{split:?} moves the singular values");
    }
}
