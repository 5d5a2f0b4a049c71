//! Log setup: human-readable lines on stderr, level from `RUST_LOG` or `-v`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `verbose` raises the default level.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "info,iceberg=warn,datafusion=warn,sqlx=warn,opendal=warn",
        1 => "debug,iceberg=info,datafusion=info,sqlx=warn,opendal=info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}
