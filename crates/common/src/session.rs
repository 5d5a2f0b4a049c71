//! Who is asking, and through which door.

use std::net::SocketAddr;

/// The protocol a session arrived by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// PostgreSQL wire protocol.
    PgWire,
    /// Arrow Flight SQL.
    FlightSql,
    /// The `rxgate` command line (sql, pipeline).
    Cli,
    /// The web console on the operations HTTP listener.
    Http,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 4] = [Channel::PgWire, Channel::FlightSql, Channel::Cli, Channel::Http];

    /// Lower-case name used in logs and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::PgWire => "pgwire",
            Channel::FlightSql => "flightsql",
            Channel::Cli => "cli",
            Channel::Http => "http",
        }
    }
}

/// An authenticated (or, for now, trusted) principal of one session.
#[derive(Debug, Clone)]
pub struct Identity {
    /// User name as authenticated.
    pub user: String,
    /// Roles granted to the user.
    pub roles: Vec<String>,
    /// The door the session came through.
    pub channel: Channel,
    /// Client address, when there is a network peer.
    pub client_addr: Option<SocketAddr>,
}

impl Identity {
    /// A local CLI identity for the operating-system user running `rxgate`. The local operator
    /// owns the data directory, so the CLI acts with the `admin` role.
    pub fn cli(user: impl Into<String>) -> Self {
        Self { user: user.into(), roles: vec!["admin".into()], channel: Channel::Cli, client_addr: None }
    }
}
