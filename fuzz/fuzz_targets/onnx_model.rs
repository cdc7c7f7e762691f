//! The ONNX model parser (graph, nodes, attributes, initializers, value infos).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dac::fuzzing::onnx_model(data);
});
