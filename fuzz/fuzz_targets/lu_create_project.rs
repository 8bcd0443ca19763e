#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| renketsu_linkage_unit::fuzzing::create_project(data));
