//! End-to-end ONNX rewrite in memory; the last byte picks the options (fixed rank, energy,
//! planned target with every scheme, fused layout).
#![no_main]
use dac::convert::{ConvertOptions, Layout};
use dac::Rank;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let pick = data.last().copied().unwrap_or(0);
    let options = match pick % 4 {
        0 => ConvertOptions::new(Rank::Fixed(usize::from(pick / 4) % 5 + 1)),
        1 => ConvertOptions::new(Rank::Energy(0.9)).layout(Layout::Fused),
        2 => ConvertOptions::macs(1.5),
        _ => ConvertOptions::speedup(3.0).input_size(16, 16),
    };
    let _ = dac::io::onnx::rewrite_model(data, &options);
});
