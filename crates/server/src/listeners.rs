//! The listeners beside the PostgreSQL one: Flight SQL (binding it from the settings, telling
//! the user how to connect with ADBC) and the operations HTTP listener; and running them all
//! until the same shutdown signal.

use std::future::Future;
use std::sync::Arc;

use rxgate_auth::UserDirectory;
use rxgate_common::Result;
use rxgate_engine::Engine;
use rxgate_flightsql::FlightSqlServer;
use rxgate_http::HttpServer;
use rxgate_pgwire::PgServer;

use crate::config::Settings;
use crate::users::DemoLogin;

/// Binds the Flight SQL listener unless `[flightsql] enabled = false`. A TLS setup that cannot
/// be used or an address that cannot be bound stops the server (fail closed).
pub(crate) async fn bind(
    settings: &Settings,
    engine: Engine,
    users: Arc<UserDirectory>,
) -> Result<Option<FlightSqlServer>> {
    let Some(config) = &settings.flight else { return Ok(None) };
    let server = FlightSqlServer::bind(engine, config, users).await?;
    let addr = server.local_addr()?;
    tracing::info!(%addr, tls = server.tls_enabled(), "flight sql listening");
    Ok(Some(server))
}

/// Binds the operations HTTP listener unless `[http] listen = "0"`.
pub(crate) async fn bind_http(
    settings: &Settings,
    engine: Engine,
    users: Arc<UserDirectory>,
) -> Result<Option<HttpServer>> {
    let Some(config) = &settings.http else { return Ok(None) };
    let server = HttpServer::bind(engine, config, users).await?;
    tracing::info!(addr = %server.local_addr()?, "http listening");
    Ok(Some(server))
}

/// The ADBC URI of the listener.
fn uri(server: &FlightSqlServer) -> Result<String> {
    let addr = server.local_addr()?;
    let scheme = if server.tls_enabled() { "grpc+tls" } else { "grpc" };
    Ok(format!("{scheme}://{addr}"))
}

/// A Python one-liner connecting with ADBC (user names and demo passwords are quote-safe).
fn adbc_line(uri: &str, user: &str, password: &str) -> String {
    // The demo's `public` user may read the report tables only (catalog/policies.toml).
    let public = crate::users::DEMO_USERS.iter().any(|(u, role)| *u == user && *role == "public");
    let table = if public { "health.city_report" } else { "health.prescriber_drug" };
    format!(
        "python -c 'import adbc_driver_flightsql.dbapi as f; c = f.connect(\"{uri}\", db_kwargs={{\"username\": \"{user}\", \"password\": \"{password}\"}}, autocommit=True); print(c.cursor().execute(\"SELECT count(*) FROM {table}\").fetchall())'"
    )
}

/// Prints where Flight SQL clients connect and how (ADBC, pyarrow.flight).
pub(crate) fn print_connect(
    server: &FlightSqlServer,
    demo_logins: Option<&[DemoLogin]>,
    user_count: usize,
) -> Result<()> {
    let uri = uri(server)?;
    let tls = if server.tls_enabled() { "TLS" } else { "no TLS" };
    println!("rxgate is serving Arrow Flight SQL clients on {uri} ({tls}; basic auth, then a bearer token)");
    match demo_logins {
        Some(logins) => {
            for l in logins {
                if let Some(p) = &l.password {
                    println!("  adbc ({}): {}", l.user, adbc_line(&uri, &l.user, p));
                }
            }
        }
        None if user_count == 0 => {}
        None => println!("  adbc: adbc_driver_flightsql.dbapi.connect(\"{uri}\", db_kwargs={{\"username\": USER, \"password\": PASSWORD}})"),
    }
    if server.tls_enabled() {
        println!("  with a private CA, add db_kwargs \"adbc.flight.sql.client_option.tls_root_certs\": open(\"ca.crt\").read()");
    }
    Ok(())
}

/// Runs the PostgreSQL listener and, when bound, the Flight SQL and HTTP ones until
/// `shutdown`; an error of any ends them all.
pub(crate) async fn run_beside(
    pg: PgServer,
    flight: Option<FlightSqlServer>,
    http: Option<HttpServer>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let pg = pg.run(wait(stopped.clone()));
    let flight = async {
        match flight {
            Some(f) => f.run(wait(stopped.clone())).await,
            None => Ok(()),
        }
    };
    let http = async {
        match http {
            Some(h) => h.run(wait(stopped.clone())).await,
            None => Ok(()),
        }
    };
    let signal = async {
        shutdown.await;
        let _ = stop.send(true);
        Ok(())
    };
    tokio::try_join!(pg, flight, http, signal).map(|_| ())
}
