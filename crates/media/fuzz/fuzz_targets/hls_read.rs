#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skylark_media::fuzzing::fuzz_hls_read(data);
});
