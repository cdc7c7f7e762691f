//! The protobuf wire reader, on a message and every nested message.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dac::fuzzing::protobuf(data);
});
