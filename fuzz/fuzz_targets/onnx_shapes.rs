//! ONNX shape inference and MAC counting; the last byte, when odd, gives an input size.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let size = match data.last() {
        Some(&b) if b % 2 == 1 => Some((usize::from(b / 2) + 1, usize::from(b / 4) + 1)),
        _ => None,
    };
    let _ = dac::fuzzing::onnx_shapes(data, size);
});
