//! The `nnkern` command-line tool.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "nnkern", version, about = "Compute kernels for training neural networks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the version, the ISA dispatch picked, the ISAs this CPU runs and the thread count.
    Info,
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Command::Info => {
            println!("nnkern {}", env!("CARGO_PKG_VERSION"));
            println!("isa: {}", nnkern::Isa::detected());
            let supported: Vec<&str> = nnkern::Isa::supported().iter().map(|i| i.name()).collect();
            println!("isas supported: {}", supported.join(", "));
            println!("threads: {}", nnkern::num_threads());
        }
    }
}
