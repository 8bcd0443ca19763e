#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| renketsu_linkage_unit::fuzzing::content_file(data));
