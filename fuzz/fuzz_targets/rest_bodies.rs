#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| statewall::fuzzing::rest_bodies(data));
