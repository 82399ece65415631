#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| statewall::fuzzing::dynmon_object(data));
