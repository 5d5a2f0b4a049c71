//! The `rxgate` binary: parse the command line, hand over to the application.

use clap::Parser;

/// mimalloc: faster than glibc malloc for the engine's many short-lived buffers, and it returns
/// freed memory instead of growing per-thread arenas.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = rxgate_server::cli::Cli::parse();
    rxgate_server::allocator::settle(&cli.command);
    rxgate_server::logging::init(cli.verbose, cli.command.serves());
    // Statements are planned and run on these threads: their stacks are sized for the deepest
    // statement the engine accepts (rxgate_engine::limits).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .thread_stack_size(rxgate_engine::limits::WORKER_STACK_BYTES)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rxgate: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(rxgate_server::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rxgate: error [{:?}]: {}", e.code, e.message);
            std::process::ExitCode::FAILURE
        }
    }
}
