//! Login throttling, shared by every frontend: failed logins are counted per user name and
//! per client address. After `free_failures` failures of a key, each further attempt of that
//! key waits a delay that doubles with every failure (`base_delay`, up to `max_delay`); after
//! `lockout_after` failures the key is locked out for `lockout`, and every attempt, with the
//! right password or not, is refused until then. A success forgets the user's failures (not
//! the address's); failures older than `forget_after` are forgotten.
//!
//! Attempts of one key are spaced, not just delayed: each reserves the next free moment, so
//! parallel guesses wait one after the other. An attempt that would have to wait longer than
//! `max_delay` is refused at once (no task sleeps for long). User names are counted whether
//! they exist or not, so the throttle tells nothing about which users exist.
//!
//! **Invariant:** every frontend asks [`LoginThrottle::admit`] before it checks a password and
//! reports the outcome with [`LoginThrottle::failed`] / [`LoginThrottle::succeeded`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Keys tracked at most; beyond it stale keys are dropped, and new ones are not tracked
/// until there is room (the throttle never grows without bound).
const MAX_KEYS: usize = 100_000;

/// Throttle settings (`[auth] login_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Throttle at all.
    pub enabled: bool,
    /// Failures of a key before its attempts are delayed.
    pub free_failures: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Duration,
    /// The longest delay; an attempt that would wait longer is refused.
    pub max_delay: Duration,
    /// Failures of a key that lock it out; 0: never.
    pub lockout_after: u32,
    /// How long a lock-out lasts.
    pub lockout: Duration,
    /// Failures older than this are forgotten.
    pub forget_after: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            free_failures: 3,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(4),
            lockout_after: 10,
            lockout: Duration::from_secs(300),
            forget_after: Duration::from_secs(900),
        }
    }
}

/// What a throttle key counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Failed logins of one user name, from anywhere.
    User,
    /// Failed logins from one client address, for any user.
    Address,
}

impl Scope {
    /// `user` or `address`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Address => "address",
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    last_failure_wall: SystemTime,
    locked_until: Option<Instant>,
    /// The next moment an attempt of this key may run.
    next_slot: Instant,
}

/// The answer to a login attempt before its password is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Check the password after waiting `delay`; `event` (for the audit trail) says why
    /// there is a delay.
    Proceed { delay: Duration, event: Option<String> },
    /// Refuse without checking anything: a lock-out, or more attempts waiting than the
    /// longest delay allows. `message` is for the client and the audit trail.
    Refused { message: String },
}

/// One row of `system.login_throttle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleRow {
    /// `user` or `address`.
    pub scope: &'static str,
    /// The user name or the client address.
    pub key: String,
    /// Failed logins counted.
    pub failures: u32,
    /// The delay the next attempt waits.
    pub delay_ms: u64,
    /// Seconds of lock-out left (0: not locked out).
    pub locked_secs: u64,
    /// When the last failure happened.
    pub last_failure: SystemTime,
}

/// The failed-login counters of the process (one, shared by pgwire and Flight SQL).
#[derive(Debug)]
pub struct LoginThrottle {
    config: ThrottleConfig,
    entries: Mutex<HashMap<(Scope, String), Entry>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new(ThrottleConfig::default())
    }
}

impl LoginThrottle {
    /// A throttle with no failures counted.
    pub fn new(config: ThrottleConfig) -> Self {
        Self { config, entries: Mutex::new(HashMap::new()) }
    }

    /// The settings.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    fn keys(user: &str, addr: Option<IpAddr>) -> Vec<(Scope, String)> {
        let mut keys = vec![(Scope::User, user.to_string())];
        if let Some(a) = addr {
            keys.push((Scope::Address, a.to_string()));
        }
        keys
    }

    /// The delay the next attempt of a key with `failures` failures waits.
    fn delay_for(&self, failures: u32) -> Duration {
        if failures < self.config.free_failures {
            return Duration::ZERO;
        }
        let doublings = (failures - self.config.free_failures).min(20);
        self.config.base_delay.saturating_mul(1 << doublings).min(self.config.max_delay)
    }

    /// Drops what time has made irrelevant in `e`; false when nothing is left to remember.
    fn refresh(&self, e: &mut Entry, now: Instant) -> bool {
        if let Some(until) = e.locked_until {
            if now >= until {
                // A lock-out served wipes the slate.
                e.locked_until = None;
                e.failures = 0;
            }
        }
        if e.locked_until.is_none() && now.duration_since(e.last_failure) >= self.config.forget_after {
            e.failures = 0;
        }
        e.failures > 0 || e.locked_until.is_some() || e.next_slot > now
    }

    /// Asks whether an attempt for `user` from `addr` may check its password, and when.
    pub fn admit(&self, user: &str, addr: Option<IpAddr>) -> Admission {
        if !self.config.enabled {
            return Admission::Proceed { delay: Duration::ZERO, event: None };
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let keys = Self::keys(user, addr);
        // Lock-outs first: nothing is reserved for a refused attempt.
        for key in &keys {
            if let Some(e) = entries.get_mut(key) {
                self.refresh(e, now);
                if let Some(until) = e.locked_until {
                    let left = until.duration_since(now).as_secs().max(1);
                    return Admission::Refused {
                        message: format!(
                            "too many failed logins for {} \"{}\": locked out for {left} more seconds",
                            key.0.as_str(),
                            key.1
                        ),
                    };
                }
            }
        }
        // The wait of each key: the next free moment, plus its delay.
        let mut wait = Duration::ZERO;
        let mut reasons = vec![];
        let mut plans = vec![];
        for key in &keys {
            let Some(e) = entries.get(key) else { continue };
            let delay = self.delay_for(e.failures);
            if delay.is_zero() {
                continue;
            }
            let start = e.next_slot.max(now);
            let key_wait = start.duration_since(now) + delay;
            reasons.push(format!("{} failed logins for {} \"{}\"", e.failures, key.0.as_str(), key.1));
            plans.push((key.clone(), start + delay));
            wait = wait.max(key_wait);
        }
        if wait > self.config.max_delay {
            return Admission::Refused {
                message: format!("too many login attempts: {}; try again later", reasons.join(", ")),
            };
        }
        for (key, next) in plans {
            if let Some(e) = entries.get_mut(&key) {
                e.next_slot = next;
            }
        }
        let event = (!wait.is_zero()).then(|| format!("login delayed {} ms: {}", wait.as_millis(), reasons.join(", ")));
        Admission::Proceed { delay: wait, event }
    }

    /// Counts a failed login; returns the lock-outs it started (for the audit trail).
    pub fn failed(&self, user: &str, addr: Option<IpAddr>) -> Vec<String> {
        if !self.config.enabled {
            return vec![];
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_KEYS {
            entries.retain(|_, e| self.refresh(e, now));
        }
        let mut events = vec![];
        for key in Self::keys(user, addr) {
            if !entries.contains_key(&key) && entries.len() >= MAX_KEYS {
                continue;
            }
            let e = entries.entry(key.clone()).or_insert(Entry {
                failures: 0,
                last_failure: now,
                last_failure_wall: SystemTime::now(),
                locked_until: None,
                next_slot: now,
            });
            self.refresh(e, now);
            e.failures = e.failures.saturating_add(1);
            e.last_failure = now;
            e.last_failure_wall = SystemTime::now();
            if self.config.lockout_after > 0 && e.failures >= self.config.lockout_after && e.locked_until.is_none() {
                e.locked_until = Some(now + self.config.lockout);
                events.push(format!(
                    "{} \"{}\" locked out for {} s after {} failed logins",
                    key.0.as_str(),
                    key.1,
                    self.config.lockout.as_secs(),
                    e.failures
                ));
            }
        }
        events
    }

    /// A successful login: the user's failures are forgotten (the address's are not, so one
    /// good account does not reset the count of guesses from that address).
    pub fn succeeded(&self, user: &str) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).remove(&(Scope::User, user.to_string()));
    }

    /// The keys with failures or a lock-out, most failures first.
    pub fn snapshot(&self) -> Vec<ThrottleRow> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| self.refresh(e, now));
        let mut rows: Vec<ThrottleRow> = entries
            .iter()
            .filter(|(_, e)| e.failures > 0 || e.locked_until.is_some())
            .map(|((scope, key), e)| ThrottleRow {
                scope: scope.as_str(),
                key: key.clone(),
                failures: e.failures,
                delay_ms: self.delay_for(e.failures).as_millis() as u64,
                locked_secs: e.locked_until.map_or(0, |u| u.duration_since(now).as_secs().max(1)),
                last_failure: e.last_failure_wall,
            })
            .collect();
        rows.sort_by(|a, b| b.failures.cmp(&a.failures).then_with(|| a.key.cmp(&b.key)));
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ThrottleConfig {
        ThrottleConfig {
            enabled: true,
            free_failures: 2,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(800),
            lockout_after: 5,
            lockout: Duration::from_millis(300),
            forget_after: Duration::from_secs(60),
        }
    }

    fn delay(a: Admission) -> Duration {
        match a {
            Admission::Proceed { delay, .. } => delay,
            Admission::Refused { message } => panic!("refused: {message}"),
        }
    }

    #[test]
    fn delays_grow_then_lock_out_then_expire() {
        let t = LoginThrottle::new(config());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut delays = vec![];
        for _ in 0..4 {
            delays.push(delay(t.admit("ann", Some(ip))));
            assert!(t.failed("ann", Some(ip)).is_empty());
            // Let the reserved moment pass, as a client that waited would.
            std::thread::sleep(delays.last().copied().unwrap());
        }
        assert_eq!(delays[0], Duration::ZERO);
        assert_eq!(delays[1], Duration::ZERO);
        assert!(delays[2] >= Duration::from_millis(90) && delays[3] > delays[2], "{delays:?}");
        std::thread::sleep(delay(t.admit("ann", Some(ip))));
        let events = t.failed("ann", Some(ip));
        assert_eq!(events.len(), 2, "user and address locked: {events:?}");
        let Admission::Refused { message } = t.admit("ann", None) else { panic!("not locked") };
        assert!(message.contains("locked out"), "{message}");
        // Another user from the same address is locked out too; from elsewhere, not.
        assert!(matches!(t.admit("bob", Some(ip)), Admission::Refused { .. }));
        assert_eq!(delay(t.admit("bob", Some("10.0.0.2".parse().unwrap()))), Duration::ZERO);
        let rows = t.snapshot();
        assert!(rows.iter().any(|r| r.scope == "user" && r.key == "ann" && r.locked_secs > 0), "{rows:?}");
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(delay(t.admit("ann", Some(ip))), Duration::ZERO);
        assert!(t.snapshot().is_empty());
    }

    #[test]
    fn parallel_attempts_are_spaced_and_success_forgets_the_user() {
        let t = LoginThrottle::new(config());
        for _ in 0..3 {
            t.failed("cy", None);
        }
        // Three failures: the next attempts wait 200 ms each, one after the other.
        let a = delay(t.admit("cy", None));
        let b = delay(t.admit("cy", None));
        assert!(b >= a + Duration::from_millis(150), "{a:?} {b:?}");
        // Until the wait would pass the longest delay.
        let mut refused = false;
        for _ in 0..5 {
            refused |= matches!(t.admit("cy", None), Admission::Refused { .. });
        }
        assert!(refused);
        t.succeeded("cy");
        assert_eq!(delay(t.admit("cy", None)), Duration::ZERO);
        let off = LoginThrottle::new(ThrottleConfig { enabled: false, ..config() });
        for _ in 0..20 {
            off.failed("dee", None);
        }
        assert_eq!(delay(off.admit("dee", None)), Duration::ZERO);
    }
}
