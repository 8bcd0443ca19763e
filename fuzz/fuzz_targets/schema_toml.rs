#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| renketsu_linkage::fuzzing::schema_toml(data));
