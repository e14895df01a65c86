#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| intr_explorer::fuzzing::zip_index(data));
