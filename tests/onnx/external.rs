//! Models whose initializers keep their data in a file beside them (ONNX external data): read
//! from there, written back inline, the result equal to rewriting the same model saved in one
//! file; bad references are errors naming the initializer, and nothing is written.
#![cfg(feature = "onnx")]

use crate::rewrite::{net_graph, SHAPE};
use crate::support::onnx::*;
use crate::support::values;
use dac::convert::ConvertOptions;
use dac::io::onnx::rewrite_file;
use dac::Rank;
use std::path::Path;

/// `tensor` with its `raw_data` moved to `file` at the current end (after `pad` zero bytes),
/// referenced by `location`; `offset_shift` moves the recorded offset (to make it wrong).
fn externalize(tensor: &[u8], file: &mut Vec<u8>, location: &str, pad: usize, offset_shift: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entries = Vec::new();
    for f in fields(tensor) {
        if f.number != 9 {
            out.extend_from_slice(f.raw);
            continue;
        }
        file.resize(file.len() + pad, 0);
        let offset = (file.len() as i64 + offset_shift).to_string();
        let length = f.bytes.len().to_string();
        file.extend_from_slice(f.bytes);
        for (k, v) in [("location", location), ("offset", offset.as_str()), ("length", length.as_str())] {
            let mut e = Vec::new();
            bytes_field(&mut e, 1, k.as_bytes());
            bytes_field(&mut e, 2, v.as_bytes());
            entries.push(e);
        }
    }
    for e in entries {
        bytes_field(&mut out, 13, &e);
    }
    uint_field(&mut out, 14, 1);
    out
}

/// The test network with every initializer's data in `dir/<location>`; returns the model.
fn external_net(dir: &Path, location: &str, offset_shift: i64) -> Vec<u8> {
    external_net_as(dir, location, location, offset_shift)
}

/// [`external_net`] with the data written to `dir/<file>` but referenced as `location`.
fn external_net_as(dir: &Path, file: &str, location: &str, offset_shift: i64) -> Vec<u8> {
    let mut g = net_graph(false);
    let mut data = Vec::new();
    g.inits =
        g.inits.iter().enumerate().map(|(i, t)| externalize(t, &mut data, location, i % 3, offset_shift)).collect();
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    model(&g, 13, &[])
}

fn options() -> ConvertOptions {
    ConvertOptions::new(Rank::Fixed(2))
}

#[test]
fn external_data_is_read_and_written_inline() {
    let dir = tempfile::tempdir().unwrap();
    let inline = dir.path().join("inline.onnx");
    std::fs::write(&inline, model(&net_graph(false), 13, &[])).unwrap();
    let want = dir.path().join("want.onnx");
    let want_report = rewrite_file(&inline, &want, &options()).unwrap();
    for location in ["weights.bin", "sub/dir/weights.bin", "./w.bin"] {
        let ext = dir.path().join("ext.onnx");
        let m = external_net(dir.path(), location, 0);
        std::fs::write(&ext, &m).unwrap();
        let out = dir.path().join("elsewhere").join("out.onnx");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let report = rewrite_file(&ext, &out, &options().force(true)).unwrap();
        assert_eq!(report.converted, want_report.converted, "{location}");
        let got = std::fs::read(&out).unwrap();
        // Every tensor inline, in the same order and fields as the one-file model's: same bytes.
        assert_eq!(got, std::fs::read(&want).unwrap(), "{location}");
        assert!(!contains(&got, location.trim_start_matches("./").as_bytes()), "{location}: no reference left");
        assert_eq!(std::fs::read(&ext).unwrap(), m, "input unchanged");
    }
    // At full rank the rewrite of the external model computes what the original does.
    let ext = dir.path().join("ext.onnx");
    let full = dir.path().join("full.onnx");
    rewrite_file(&ext, &full, &ConvertOptions::new(Rank::Energy(1.0)).allow_slower(true)).unwrap();
    let x = values(3, SHAPE.iter().product());
    let original = run_tract(&std::fs::read(&inline).unwrap(), &SHAPE, &x);
    let rewritten = run_tract(&std::fs::read(&full).unwrap(), &SHAPE, &x);
    assert!(relative_diff(&original, &rewritten) < 1e-4);
}

#[test]
fn bad_external_references_are_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let run = |m: &[u8]| {
        let input = dir.path().join("in.onnx");
        std::fs::write(&input, m).unwrap();
        let err = rewrite_file(&input, &out, &options()).unwrap_err();
        assert!(!out.exists(), "nothing written: {err}");
        err
    };
    // Outside the model's directory.
    for location in ["../w.bin", "/tmp/w.bin", ""] {
        let err = run(&external_net_as(dir.path(), "w.bin", location, 0));
        assert!(err.to_string().contains("inside the model's directory"), "{location}: {err}");
        assert!(err.to_string().contains("initializer `conv0.weight`"), "{err}");
    }
    // A file that is not there.
    let err = run(&external_net_as(dir.path(), "w.bin", "x.bin", 0)).to_string();
    assert!(
        err.contains("initializer `conv0.weight`") && err.contains("`x.bin`") && err.contains("cannot be read"),
        "{err}"
    );
    // A range past the end of the file.
    let err = run(&external_net(dir.path(), "w.bin", 1 << 20));
    assert!(err.to_string().contains("lies outside `w.bin`"), "{err}");
}

/// A model given as bytes has no directory to find its external data in: an error that says
/// which initializer and how to read it instead.
#[test]
fn external_data_in_memory_needs_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = external_net(dir.path(), "w.bin", 0);
    let err = dac::io::onnx::rewrite_model(&m, &options()).unwrap_err().to_string();
    assert!(err.contains("initializer `conv0.weight`") && err.contains("rewrite_file"), "{err}");
}
