//! The `runtime` binary: parses arguments and calls the library.
//!
//! Exit status: 0 success, 1 the job failed, 2 usage, config or module
//! error (nothing ran).

mod cli;

fn main() -> std::process::ExitCode {
    if let Some(status) = cli::compile::child() {
        return status;
    }
    cli::main()
}
