#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| nnkern_fuzzing::gemm_f32(data));
