//! `rxgate user add|passwd|remove|list` and the demo users.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use std::sync::Arc;

use rxgate_auth::{random_password, ScramVerifier, User, Users, UsersFileLock};
use rxgate_common::{Error, Result};
use rxgate_engine::{Engine, PolicyStore, BUILTIN_POLICY};
use rxgate_policy::Policy;

use crate::cli::UserCommand;
use crate::config::Settings;

/// Runs a user subcommand against the configured users file.
pub fn run(settings: &Settings, action: UserCommand) -> Result<()> {
    let path = &settings.auth.users_file;
    let iterations = settings.auth.scram_iterations;
    match action {
        UserCommand::Add { name, roles, max_connections, force, password_stdin } => {
            rxgate_auth::validate_name("user", &name)?;
            for r in &roles {
                rxgate_auth::validate_name("role", r)?;
            }
            // A role the policy does not define grants nothing: refuse it unless --force.
            let (policy, origin) = policy_in_force(settings)?;
            let unknown: Vec<&String> = roles.iter().filter(|r| !policy.roles().contains_key(*r)).collect();
            if !unknown.is_empty() {
                let names = unknown.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ");
                let known = policy.roles().keys().cloned().collect::<Vec<_>>().join(", ");
                if !force {
                    return Err(Error::invalid(format!(
                        "role {names} is not defined in the policy ({origin}); its roles are: {known}. \
                         Use --force to add the user anyway (such a role grants nothing until the policy defines it)"
                    )));
                }
                eprintln!(
                    "warning: role {names} is not defined in the policy ({origin}); it grants nothing until it is"
                );
            }
            // Check before asking for a password that would be thrown away.
            let _lock = UsersFileLock::acquire(path)?;
            let mut users = Users::load(path)?;
            if users.get(&name).is_some() {
                return Err(Error::invalid(format!(
                    "user {name:?} already exists (change the password with `rxgate user passwd {name}`)"
                )));
            }
            let password = read_new_password(&name, password_stdin)?;
            let verifier = ScramVerifier::new(&password, iterations)?;
            users.add(User { name: name.clone(), roles, max_connections, verifier })?;
            users.save(path)?;
            eprintln!("user {name} added to {}", path.display());
        }
        UserCommand::Passwd { name, password_stdin } => {
            let _lock = UsersFileLock::acquire(path)?;
            let mut users = Users::load(path)?;
            if users.get(&name).is_none() {
                return Err(Error::invalid(format!("no user {name:?} in {}", path.display())));
            }
            let password = read_new_password(&name, password_stdin)?;
            users.set_verifier(&name, ScramVerifier::new(&password, iterations)?)?;
            users.save(path)?;
            eprintln!("password of {name} changed; sessions open now keep running, new logins need it");
        }
        UserCommand::Remove { name } => {
            let _lock = UsersFileLock::acquire(path)?;
            let mut users = Users::load(path)?;
            users.remove(&name).map_err(|e| e.context(path.display()))?;
            users.save(path)?;
            eprintln!("user {name} removed; sessions open now keep running, new logins are refused");
        }
        UserCommand::List => {
            let users = Users::load(path)?;
            if users.is_empty() {
                eprintln!("no users in {} (add one with `rxgate user add NAME`)", path.display());
                return Ok(());
            }
            // Each role says whether the policy in force defines it ("role?" when it does not).
            let (policy, origin) = policy_in_force(settings)?;
            let width = users.iter().map(|u| u.name.len()).max().unwrap_or(4).max(4);
            println!("{:<width$}  {:<15}  roles", "user", "max_connections");
            let mut undefined = false;
            for u in users.iter() {
                let max = u.max_connections.map(|m| m.to_string()).unwrap_or_else(|| "-".into());
                let roles: Vec<String> = u
                    .roles
                    .iter()
                    .map(|r| {
                        if policy.roles().contains_key(r) {
                            r.clone()
                        } else {
                            undefined = true;
                            format!("{r}?")
                        }
                    })
                    .collect();
                println!("{:<width$}  {:<15}  {}", u.name, max, roles.join(","));
            }
            if undefined {
                println!("(role? = a role the policy ({origin}) does not define: it grants nothing)");
            }
        }
    }
    Ok(())
}

/// Reads a new password: one line from stdin with --password-stdin, else asked twice on the
/// terminal without echo.
fn read_new_password(name: &str, from_stdin: bool) -> Result<String> {
    let password = if from_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Error::invalid(format!("cannot read the password from stdin: {e}")))?;
        let line = text.strip_suffix('\n').unwrap_or(&text);
        line.strip_suffix('\r').unwrap_or(line).to_string()
    } else {
        if !std::io::stdin().is_terminal() {
            return Err(Error::invalid(
                "stdin is not a terminal, so the password cannot be asked: pipe it in with --password-stdin",
            ));
        }
        let first = rpassword::prompt_password(format!("New password for {name}: "))
            .map_err(|e| Error::invalid(format!("cannot read the password: {e}")))?;
        let again = rpassword::prompt_password("Enter it again: ")
            .map_err(|e| Error::invalid(format!("cannot read the password: {e}")))?;
        if first != again {
            return Err(Error::invalid("the passwords do not match"));
        }
        first
    };
    if password.is_empty() {
        return Err(Error::invalid("empty password"));
    }
    if password.contains(['\0', '\n']) {
        return Err(Error::invalid("the password must be one line without NUL characters"));
    }
    Ok(password)
}

/// The demo users and their roles.
/// Roles are those of `catalog/policies.toml`: `auditor_ca` is the state auditor of CA there.
pub const DEMO_USERS: [(&str, &str); 4] =
    [("admin", "admin"), ("analyst", "analyst"), ("auditor_ca", "state_auditor"), ("viewer", "public")];

/// The policy in force for the CLI (`[policy] file`, else the built-in policy) and its name
/// for messages.
pub fn policy_in_force(settings: &Settings) -> Result<(Arc<Policy>, String)> {
    match &settings.engine.policy_file {
        Some(path) => Ok((PolicyStore::open(path.clone(), None)?.current().0, path.display().to_string())),
        None => Ok((Arc::new(Policy::parse(BUILTIN_POLICY, "built-in policy")?), "built-in policy".into())),
    }
}

/// The name of the engine's policy for messages: its file, or "built-in policy".
pub fn policy_origin(engine: &Engine) -> String {
    engine.policy().status().path.map(|p| p.display().to_string()).unwrap_or_else(|| "built-in policy".into())
}

/// The roles some grant names, sorted.
pub fn granted_roles(policy: &Policy) -> Vec<String> {
    let mut roles: Vec<String> = policy.grants().iter().flat_map(|g| g.roles.iter().cloned()).collect();
    roles.sort();
    roles.dedup();
    roles
}

/// The demo's pseudonym key (`DATA_DIR/pseudonym.key`, 0600): created once, random.
pub fn ensure_demo_pseudonym_key(data_dir: &Path) -> Result<Vec<u8>> {
    let path = data_dir.join("pseudonym.key");
    if let Ok(existing) = std::fs::read(&path) {
        let key = existing.trim_ascii().to_vec();
        if !key.is_empty() {
            return Ok(key);
        }
    }
    let key = random_password(48);
    rxgate_auth::write_private_atomically(&path, format!("{key}\n").as_bytes())?;
    Ok(key.into_bytes())
}

/// Where `rxgate demo` keeps the passwords it generated (mode 0600). This is the one file with
/// plaintext passwords, for the demo users only; the users file holds their verifiers.
pub fn demo_credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("demo-credentials.toml")
}

/// A demo user's login; `password` is `None` when it was changed since the demo created it.
#[derive(Debug, Clone)]
pub struct DemoLogin {
    /// User name.
    pub user: String,
    /// The role the demo gave the user (user names and role names differ: `auditor_ca` is a
    /// `state_auditor`, `viewer` is `public`).
    pub role: String,
    /// Current password, if the demo still knows it.
    pub password: Option<String>,
}

/// Creates the demo users that do not exist yet (random passwords, generated once), and
/// returns the logins with the passwords that still work.
pub fn ensure_demo_users(settings: &Settings) -> Result<Vec<DemoLogin>> {
    let path = &settings.auth.users_file;
    let creds_path = demo_credentials_path(&settings.data_dir);
    let _lock = UsersFileLock::acquire(path)?;
    let mut users = Users::load(path)?;
    let mut known: toml::Table = match std::fs::read_to_string(&creds_path) {
        Ok(text) => text.parse().map_err(|e| Error::invalid(format!("{}: {e}", creds_path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => toml::Table::new(),
        Err(e) => return Err(Error::invalid(format!("cannot read {}: {e}", creds_path.display()))),
    };
    let mut created = false;
    for (name, role) in DEMO_USERS {
        if users.get(name).is_none() {
            let password = random_password(20);
            let verifier = ScramVerifier::new(&password, settings.auth.scram_iterations)?;
            users.add(User { name: name.into(), roles: vec![role.into()], max_connections: None, verifier })?;
            known.insert(name.into(), toml::Value::String(password));
            created = true;
        }
    }
    if created {
        users.save(path)?;
        let body = format!(
            "# Passwords of the users `rxgate demo` created, for the demo only.\n\
             # The users file ({}) holds only their SCRAM verifiers.\n{}",
            path.display(),
            toml::to_string(&known).map_err(|e| Error::internal(e.to_string()))?
        );
        rxgate_auth::write_private_atomically(&creds_path, body.as_bytes())?;
    }
    let logins = DEMO_USERS
        .iter()
        .map(|(name, role)| {
            let password = known
                .get(*name)
                .and_then(|v| v.as_str())
                .filter(|p| users.get(name).is_some_and(|u| u.verifier.verify_password(p)))
                .map(str::to_string);
            DemoLogin { user: name.to_string(), role: role.to_string(), password }
        })
        .collect();
    Ok(logins)
}
