//! The allocator's process-wide setting for the bulk-writing commands.
//!
//! mimalloc reads its options from the environment once, before `main` runs. By default it
//! puts its arenas under transparent huge pages, and the first touch of each huge page makes
//! the kernel zero 2 MiB. The pipeline allocates and frees large column buffers all the time:
//! that zeroing was a quarter of its CPU at scale 1, and its system time varied 0.9–1.7 s
//! between identical runs (0.55 s without huge pages, with ~140 MB less peak memory). So
//! `ingest` and `pipeline` replace their process, once, with the same command under
//! `MIMALLOC_ALLOW_THP=0` (same process id, arguments and environment otherwise). A value
//! the user set is kept, and if the re-execution cannot happen the command runs as it is.
//! The server keeps the default: its queries were not measured without huge pages.

use std::os::unix::process::CommandExt;

use crate::cli::Command;

/// mimalloc's switch for transparent huge pages.
const ALLOW_THP: &str = "MIMALLOC_ALLOW_THP";

/// For the commands that write tables in bulk (`ingest`, `pipeline`): replaces this process
/// with the same command under `MIMALLOC_ALLOW_THP=0`, unless the variable is set already.
/// Returns for other commands, and if that cannot be done.
pub fn settle(command: &Command) {
    if !matches!(command, Command::Ingest { .. } | Command::Pipeline { .. }) || std::env::var_os(ALLOW_THP).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let error = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(ALLOW_THP, "0").exec();
    eprintln!("rxgate: note: running with transparent huge pages ({error})");
}
