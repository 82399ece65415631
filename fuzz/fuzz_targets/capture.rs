#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| statewall_harness::fuzzing::capture(data));
