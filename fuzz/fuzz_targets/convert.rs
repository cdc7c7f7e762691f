//! End-to-end checkpoint conversion through files (in a temporary directory, in /dev/shm when
//! present); the last byte picks the options. A failed run must leave no output behind.
#![no_main]
use dac::io::{convert_file, ConvertOptions, FloatDtype};
use dac::Rank;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let dir = tempfile::tempdir_in(base).expect("a temporary directory");
    let (input, output) = (dir.path().join("in.safetensors"), dir.path().join("out.safetensors"));
    std::fs::write(&input, data).expect("write the input");
    let pick = data.last().copied().unwrap_or(0);
    let options = match pick % 4 {
        0 => ConvertOptions::new(Rank::Fixed(usize::from(pick / 4) % 4 + 1)),
        1 => ConvertOptions::new(Rank::Energy(0.9)).output_dtype(FloatDtype::F16),
        2 => ConvertOptions::macs(1.5).input_size(8, 8),
        _ => ConvertOptions::speedup(2.0),
    };
    if convert_file(&input, &output, &options).is_err() {
        let left = std::fs::read_dir(dir.path()).expect("list the directory").count();
        assert_eq!(left, 1, "a failed conversion left a file behind");
    }
    assert_eq!(std::fs::read(&input).expect("read the input"), data, "the input changed");
});
