//! Parses PTX files and lists their kernels: a quick check that the executor
//! accepts every instruction a kernel uses.
//!
//! `cargo run --release -p nnkern-ptx-exec --example ptx_check -- kernels/*.ptx`

use std::time::Instant;

fn main() {
    let mut failed = false;
    for path in std::env::args().skip(1) {
        let src = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                println!("{path}: {e}");
                failed = true;
                continue;
            }
        };
        let t = Instant::now();
        match nnkern_ptx_exec::Module::parse(&src) {
            Ok(m) => {
                let dt = t.elapsed();
                for name in m.kernel_names() {
                    let k = m.kernel(name).expect("listed kernel");
                    println!(
                        "{path}: {name}: {} instructions after inlining calls, {} params, {} B static shared",
                        k.instruction_count(),
                        k.param_count(),
                        k.static_shared_bytes()
                    );
                }
                println!("{path}: parsed in {dt:.2?}");
            }
            Err(e) => {
                println!("{path}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
