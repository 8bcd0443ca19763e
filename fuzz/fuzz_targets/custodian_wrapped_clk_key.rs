#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| renketsu_custodian::fuzzing::wrapped_clk_key(data));
