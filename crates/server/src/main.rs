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
    // The command runs as a task on a worker (block_on would run it on the main thread, whose
    // stack is the OS default): `rxgate sql` plans on the same stacks as the server.
    let outcome = runtime.block_on(async { tokio::spawn(rxgate_server::run(cli)).await });
    match outcome.unwrap_or_else(|e| Err(rxgate_common::Error::internal(format!("the command panicked: {e}")))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rxgate: error [{:?}]: {}", e.code, e.message);
            // The operator's own command: the full chain (every line, every source) follows.
            if e.detail() != e.message {
                for line in e.detail().lines() {
                    eprintln!("rxgate:   {line}");
                }
            }
            std::process::ExitCode::FAILURE
        }
    }
}
