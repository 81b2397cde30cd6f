#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skylark_media::fuzzing::fuzz_amf0(data);
});
