#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nnkern::fuzzing::gemm_half(data));
