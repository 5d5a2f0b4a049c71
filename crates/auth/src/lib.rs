//! Users and password verification for every frontend (PostgreSQL wire today, Flight SQL
//! basic auth later). No protocol knowledge lives here: the frontends run their exchanges and
//! ask this crate whether a password or a SCRAM proof is right.
//!
//! **Invariant:** passwords are never stored. The users file holds SCRAM-SHA-256 verifiers
//! (salt, iterations, StoredKey, ServerKey) only; a cleartext password exists in memory just
//! long enough to be hashed.

mod directory;
mod store;
pub mod throttle;
mod verifier;

pub use directory::{Credentials, Principal, UserDirectory};
pub use store::{validate_name, write_private_atomically, User, Users, UsersFileLock, MAX_NAME_LEN};
pub use throttle::{Admission, LoginThrottle, ThrottleConfig, ThrottleRow};
pub use verifier::{
    random_bytes, ScramVerifier, DEFAULT_ITERATIONS, KEY_LEN, MAX_ITERATIONS, MIN_ITERATIONS, SALT_LEN,
};

/// A random password of `len` characters from `[A-Za-z0-9]` (no look-alikes such as 0/O or 1/l; about 5.8 bits each), safe to
/// put in a connection URL unescaped.
pub fn random_password(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for b in random_bytes::<64>() {
            // Rejection sampling keeps the choice uniform over the alphabet.
            let limit = 256 - 256 % ALPHABET.len();
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_passwords_are_url_safe_and_distinct() {
        let a = super::random_password(24);
        let b = super::random_password(24);
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
