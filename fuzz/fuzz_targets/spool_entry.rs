#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nix_binary_cache::fuzzing::spool_entry(data));
