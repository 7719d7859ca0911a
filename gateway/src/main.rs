//! The `splpd` command: the gateway, its PKI tooling and its configuration checker.
//! The binary only parses the command line and hands over to the library's modules.

use std::process::ExitCode;

use clap::Parser;

mod cli;

// glibc's malloc and free were 8–9% of the gateway's CPU under `splpd-bench compare` (perf); a
// thread-caching allocator serves the per-request allocations of the exchange path cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    splpd_gateway::memory::use_small_pages();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", cli::out::error_line(&err));
            ExitCode::FAILURE
        }
    }
}
