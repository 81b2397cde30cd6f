#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    skylark_media::fuzzing::fuzz_h264_sps(data);
});
