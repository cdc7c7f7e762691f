//! The safetensors header (length, JSON, entries, data layout) and the `dac.layer.*` records.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dac::fuzzing::safetensors(data);
});
