//! Log setup: human-readable lines on stderr, level from `RUST_LOG` or `-v`.
//!
//! A server (`serve`, and `demo` unless `--no-serve`) logs INFO by default; a one-shot
//! command (`sql`, `catalog …`, `pipeline run`, `user …`, …) only warnings and errors, so its
//! stderr holds its own messages, and `--json` or `-q` runs print no log lines. Each `-v`
//! raises the level one step (warn → info → debug → trace); `RUST_LOG` overrides.

use tracing_subscriber::EnvFilter;

/// The default filter for a command: `serving` commands start at INFO, others at WARN.
pub fn default_filter(verbose: u8, serving: bool) -> &'static str {
    match verbose as usize + usize::from(serving) {
        0 => "warn",
        1 => "info,iceberg=warn,datafusion=warn,sqlx=warn,opendal=warn",
        2 => "debug,iceberg=info,datafusion=info,sqlx=warn,opendal=info",
        _ => "trace",
    }
}

/// Installs the global subscriber.
pub fn init(verbose: u8, serving: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(verbose, serving)));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shot_commands_log_warnings_and_servers_info() {
        assert_eq!(default_filter(0, false), "warn");
        assert!(default_filter(0, true).starts_with("info"));
        assert!(default_filter(1, false).starts_with("info"));
        assert!(default_filter(1, true).starts_with("debug"));
        assert_eq!(default_filter(3, true), "trace");
    }
}
