//! `runtime __compile SETTINGS` (hidden): the compiler child process. The
//! sandbox starts it to compile one module under a time and memory limit;
//! see `runtime::sandbox::compile`.

use std::process::ExitCode;

use runtime::sandbox::compile::{CHILD_COMMAND, child_main};

/// Runs the compiler child if this process was started as one.
pub fn child() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != CHILD_COMMAND {
        return None;
    }
    let rest: Vec<_> = args.collect();
    Some(ExitCode::from(child_main(&rest)))
}
