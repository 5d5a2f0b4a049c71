//! SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677): what we keep instead of a password.
//!
//! ```text
//! SaltedPassword := PBKDF2-HMAC-SHA-256(SASLprep(password), salt, iterations)
//! ClientKey      := HMAC(SaltedPassword, "Client Key")
//! StoredKey      := SHA-256(ClientKey)
//! ServerKey      := HMAC(SaltedPassword, "Server Key")
//! ```
//!
//! Only `salt`, `iterations`, `StoredKey` and `ServerKey` are kept. They let the server check a
//! SCRAM proof or a cleartext password, but not log in as the user: a SCRAM proof needs
//! `ClientKey`, which cannot be computed back from `StoredKey`. The text form is PostgreSQL's
//! `pg_authid.rolpassword` format, so verifiers move both ways between rxgate and PostgreSQL:
//!
//! ```text
//! SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>
//! ```

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use aws_lc_rs::{constant_time, digest, hmac, pbkdf2, rand};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rxgate_common::{Error, Result};

/// PBKDF2 iterations of new verifiers (PostgreSQL's default `scram_iterations`).
pub const DEFAULT_ITERATIONS: u32 = 4096;
/// The smallest iteration count we accept (RFC 7677 asks for at least 4096).
pub const MIN_ITERATIONS: u32 = 4096;
/// The largest iteration count we accept (a guard against a hostile users file).
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Salt length of new verifiers, in bytes (PostgreSQL uses 16).
pub const SALT_LEN: usize = 16;
/// Length of SHA-256 digests and HMACs.
pub const KEY_LEN: usize = 32;

const PREFIX: &str = "SCRAM-SHA-256$";

/// A SCRAM-SHA-256 verifier: salt, iteration count, StoredKey and ServerKey.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: [u8; KEY_LEN],
    server_key: [u8; KEY_LEN],
}

impl fmt::Debug for ScramVerifier {
    // Keys stay out of logs and panics even though they are not the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

/// Random bytes from the operating system's generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // aws-lc's generator only fails when the OS has no entropy source at all.
    rand::fill(&mut buf).expect("the operating system's random generator failed");
    buf
}

/// SASLprep of a password; like PostgreSQL and libpq, a password that SASLprep refuses
/// (unassigned code points, prohibited characters) is used as it is.
fn normalize(password: &str) -> Cow<'_, str> {
    stringprep::saslprep(password).unwrap_or(Cow::Borrowed(password))
}

fn salted_password(password: &str, salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    let iterations = NonZeroU32::new(iterations.max(1)).expect("iterations >= 1");
    pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, iterations, salt, normalize(password).as_bytes(), &mut out);
    out
}

/// HMAC-SHA-256.
pub(crate) fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; KEY_LEN] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg);
    tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
}

fn sha256(msg: &[u8]) -> [u8; KEY_LEN] {
    digest::digest(&digest::SHA256, msg).as_ref().try_into().expect("SHA-256 is 32 bytes")
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

impl ScramVerifier {
    /// A verifier for `password` with a fresh random salt.
    pub fn new(password: &str, iterations: u32) -> Result<Self> {
        check_iterations(iterations)?;
        Ok(Self::with_salt(password, &random_bytes::<SALT_LEN>(), iterations))
    }

    /// A verifier for `password` with the given salt (tests and known vectors).
    pub fn with_salt(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(password, salt, iterations);
        Self::from_salted_password(&salted, salt, iterations)
    }

    fn from_salted_password(salted: &[u8], salt: &[u8], iterations: u32) -> Self {
        let client_key = hmac_sha256(salted, b"Client Key");
        Self {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac_sha256(salted, b"Server Key"),
        }
    }

    /// A verifier nobody knows the password of, with a salt that depends only on `key` and
    /// `user`: it answers for unknown users, so that they cost the same work and see a salt as
    /// stable as a real user's.
    pub fn dummy(key: &[u8], user: &str) -> Self {
        let salt = hmac_sha256(key, format!("salt\0{user}").as_bytes());
        Self {
            iterations: DEFAULT_ITERATIONS,
            salt: salt[..SALT_LEN].to_vec(),
            stored_key: hmac_sha256(key, format!("stored\0{user}").as_bytes()),
            server_key: hmac_sha256(key, format!("server\0{user}").as_bytes()),
        }
    }

    /// PBKDF2 iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// The salt, raw.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// Whether `password` is the one this verifier was made from. Costs one PBKDF2 run of
    /// `iterations` whatever the answer; the comparison is constant-time.
    pub fn verify_password(&self, password: &str) -> bool {
        let candidate = Self::with_salt(password, &self.salt, self.iterations);
        // Both comparisons always run (no short-circuit), so the time does not say which failed.
        let stored = equal(&candidate.stored_key, &self.stored_key);
        let server = equal(&candidate.server_key, &self.server_key);
        stored & server
    }

    /// Checks a SCRAM `ClientProof` over `auth_message`
    /// (`client-first-bare "," server-first "," client-final-without-proof`):
    /// `ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage)` must hash to `StoredKey`.
    pub fn verify_client_proof(&self, auth_message: &[u8], client_proof: &[u8]) -> bool {
        let signature = hmac_sha256(&self.stored_key, auth_message);
        let mut client_key = [0u8; KEY_LEN];
        let len_ok = client_proof.len() == KEY_LEN;
        for (i, k) in client_key.iter_mut().enumerate() {
            // A proof of the wrong length still does all the work, then fails.
            *k = client_proof.get(i).copied().unwrap_or(0) ^ signature[i];
        }
        equal(&sha256(&client_key), &self.stored_key) & len_ok
    }

    /// `ServerSignature = HMAC(ServerKey, AuthMessage)`, which proves to the client that the
    /// server holds the verifier.
    pub fn server_signature(&self, auth_message: &[u8]) -> [u8; KEY_LEN] {
        hmac_sha256(&self.server_key, auth_message)
    }
}

fn check_iterations(iterations: u32) -> Result<()> {
    if (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "SCRAM iteration count {iterations} is out of range {MIN_ITERATIONS}..={MAX_ITERATIONS}"
        )))
    }
}

impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }
}

impl FromStr for ScramVerifier {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |what: &str| Error::invalid(format!("not a SCRAM-SHA-256 verifier ({what})"));
        let rest = s.strip_prefix(PREFIX).ok_or_else(|| bad("expected SCRAM-SHA-256$…"))?;
        let (params, keys) = rest.split_once('$').ok_or_else(|| bad("missing keys"))?;
        let (iterations, salt) = params.split_once(':').ok_or_else(|| bad("missing salt"))?;
        let (stored, server) = keys.split_once(':').ok_or_else(|| bad("missing ServerKey"))?;
        let iterations: u32 = iterations.parse().map_err(|_| bad("bad iteration count"))?;
        check_iterations(iterations)?;
        let salt = B64.decode(salt).map_err(|_| bad("bad salt"))?;
        if salt.is_empty() {
            return Err(bad("empty salt"));
        }
        let key = |k: &str, what: &str| -> Result<[u8; KEY_LEN]> {
            B64.decode(k).ok().and_then(|v| v.try_into().ok()).ok_or_else(|| bad(what))
        };
        Ok(Self {
            iterations,
            salt,
            stored_key: key(stored, "bad StoredKey")?,
            server_key: key(server, "bad ServerKey")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==, i=4096.
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_CLIENT_FIRST_BARE: &str = "n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL_NO_PROOF: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_SIGNATURE: &str = "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_verifier(password: &str) -> ScramVerifier {
        ScramVerifier::with_salt(password, &B64.decode(RFC_SALT).unwrap(), 4096)
    }

    fn rfc_auth_message() -> String {
        format!("{RFC_CLIENT_FIRST_BARE},{RFC_SERVER_FIRST},{RFC_CLIENT_FINAL_NO_PROOF}")
    }

    #[test]
    fn rfc7677_test_vector_proof_and_signature() {
        let v = rfc_verifier("pencil");
        let auth = rfc_auth_message();
        assert!(v.verify_client_proof(auth.as_bytes(), &B64.decode(RFC_PROOF).unwrap()));
        assert_eq!(B64.encode(v.server_signature(auth.as_bytes())), RFC_SERVER_SIGNATURE);
    }

    #[test]
    fn wrong_password_or_tampered_message_fails_the_proof() {
        let auth = rfc_auth_message();
        let proof = B64.decode(RFC_PROOF).unwrap();
        assert!(!rfc_verifier("pencil2").verify_client_proof(auth.as_bytes(), &proof));
        let tampered = auth.replace("i=4096", "i=4097");
        assert!(!rfc_verifier("pencil").verify_client_proof(tampered.as_bytes(), &proof));
        // Truncated or empty proofs fail without panicking.
        assert!(!rfc_verifier("pencil").verify_client_proof(auth.as_bytes(), &proof[..31]));
        assert!(!rfc_verifier("pencil").verify_client_proof(auth.as_bytes(), &[]));
    }

    #[test]
    fn cleartext_check_against_the_verifier() {
        let v = ScramVerifier::new("s3cret pass", DEFAULT_ITERATIONS).unwrap();
        assert!(v.verify_password("s3cret pass"));
        assert!(!v.verify_password("s3cret pasS"));
        assert!(!v.verify_password(""));
        // Salts are random: the same password gives another verifier.
        let w = ScramVerifier::new("s3cret pass", DEFAULT_ITERATIONS).unwrap();
        assert_ne!(v.salt(), w.salt());
        assert_ne!(v.to_string(), w.to_string());
    }

    #[test]
    fn text_form_round_trips_and_matches_postgresql() {
        let v = rfc_verifier("pencil");
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"), "{text}");
        assert!(!text.contains("pencil"));
        let back: ScramVerifier = text.parse().unwrap();
        assert_eq!(back, v);
        assert!(back.verify_password("pencil"));
        // Verifiers written by a real PostgreSQL 15 (`SET password_encryption = 'scram-sha-256';
        // CREATE ROLE u PASSWORD 'pencil'`, then `SELECT rolpassword FROM pg_authid`) are
        // accepted as they are, non-ASCII passwords included.
        let pg: ScramVerifier = "SCRAM-SHA-256$4096:8MzYWy5Rjb7eSzzPfGSnZQ==$D99RUR4kYn6AdiM+tDbj3MMemOuAIuJZLGcvHz9HN/o=:+7NKSsGOg8XjeoW9jy9XQzR3ldONcBKbYW+d6H15q58="
            .parse()
            .unwrap();
        assert!(pg.verify_password("pencil"));
        assert!(!pg.verify_password("Pencil"));
        assert_eq!(pg.to_string().parse::<ScramVerifier>().unwrap(), pg);
        let pg_unicode: ScramVerifier = "SCRAM-SHA-256$4096:a6eULhvPZPTZpZWTHRXLNQ==$6ozc70zN4DYgF54id/AVTpdAbSdo6saH5WGlHwUlQbw=:rDTjkG0ClFCvagS5Pb2o4qFZpstf9x5IRgWl7CzVSZw="
            .parse()
            .unwrap();
        assert!(pg_unicode.verify_password("\u{fc}n\u{ef}c\u{f8}d\u{e9} pass"));
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "",
            "pencil",
            "md5abcdef",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$x:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$1:8MzYWy5Rjb7eSzzPfGSnZQ==$D99RUR4kYn6AdiM+tDbj3MMemOuAIuJZLGcvHz9HN/o=:+7NKSsGOg8XjeoW9jy9XQzR3ldONcBKbYW+d6H15q58=",
        ] {
            assert!(bad.parse::<ScramVerifier>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn dummy_verifier_is_stable_per_user_and_accepts_nothing() {
        let key = random_bytes::<32>();
        let a1 = ScramVerifier::dummy(&key, "nobody");
        let a2 = ScramVerifier::dummy(&key, "nobody");
        let b = ScramVerifier::dummy(&key, "somebody");
        assert_eq!(a1.salt(), a2.salt());
        assert_ne!(a1.salt(), b.salt());
        assert_eq!(a1.iterations(), DEFAULT_ITERATIONS);
        assert!(!a1.verify_password(""));
        assert!(!a1.verify_password("nobody"));
    }

    #[test]
    fn iteration_bounds() {
        assert!(ScramVerifier::new("x", 1000).is_err());
        assert!(ScramVerifier::new("x", MIN_ITERATIONS).is_ok());
    }

    #[test]
    fn saslprep_normalises_like_postgresql() {
        // U+00AA (feminine ordinal) normalises to "a" under NFKC; U+00A0 maps to a space.
        let v = ScramVerifier::new("\u{00AA}b\u{00A0}c", DEFAULT_ITERATIONS).unwrap();
        assert!(v.verify_password("ab c"));
        // A password SASLprep refuses (a control character) is used raw, not rejected.
        let w = ScramVerifier::new("a\u{0007}b", DEFAULT_ITERATIONS).unwrap();
        assert!(w.verify_password("a\u{0007}b"));
    }
}
