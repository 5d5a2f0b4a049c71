//! Passwords in URIs never leave the process.
//!
//! Catalog and storage URIs may carry credentials (`postgres://rxgate:secret@host/db`,
//! `…?password=secret`). [`redact_uri`] is the one function that prints such a URI: every
//! error message, log field, audit record and help text that names a catalog or storage
//! location goes through it (or through [`redact_secrets`], which redacts every URI inside a
//! longer text; [`crate::Error::new`] applies it to every message as a safety net).

use std::borrow::Cow;

/// What a password is replaced with.
pub const REDACTED: &str = "***";

/// Query parameters of a URI whose values are secrets.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "sslpassword",
    "secret",
    "secret_access_key",
    "session_token",
    "token",
    "access_token",
    "sig",
    "signature",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "x-goog-signature",
    "x-goog-credential",
];

/// A URI with its password, and the values of secret query parameters, replaced by `***`:
/// `postgres://rxgate:secret@db:5432/cat?password=x` → `postgres://rxgate:***@db:5432/cat?password=***`.
/// Text without credentials is returned unchanged.
pub fn redact_uri(uri: &str) -> String {
    redact_secrets(uri).into_owned()
}

/// Every URI inside `text` redacted as by [`redact_uri`]; borrowed when nothing changed.
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut copied = 0; // text[..copied] is in `out` (or unchanged so far)
    let mut changed = false;
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let auth_start = search + found + 3;
        // The URI token ends at whitespace, a quote or an angle bracket.
        let end = text[auth_start..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .map_or(text.len(), |i| auth_start + i);
        let token = &text[auth_start..end];
        let auth_len = token.find(['/', '?', '#']).unwrap_or(token.len());
        let authority = &token[..auth_len];
        // userinfo is everything before the last '@' of the authority; the password follows
        // its first ':'.
        if let Some(at) = authority.rfind('@') {
            if let Some(colon) = authority[..at].find(':') {
                let (from, to) = (auth_start + colon + 1, auth_start + at);
                if from < to {
                    out.push_str(&text[copied..from]);
                    out.push_str(REDACTED);
                    copied = to;
                    changed = true;
                }
            }
        }
        if let Some(q) = token[auth_len..].find('?') {
            let mut pos = auth_start + auth_len + q + 1;
            let query_end = text[pos..end].find('#').map_or(end, |i| pos + i);
            while pos < query_end {
                let param_end = text[pos..query_end].find('&').map_or(query_end, |i| pos + i);
                if let Some(eq) = text[pos..param_end].find('=') {
                    let key = &text[pos..pos + eq];
                    let value_start = pos + eq + 1;
                    if value_start < param_end && SECRET_PARAMS.iter().any(|k| key.eq_ignore_ascii_case(k)) {
                        out.push_str(&text[copied..value_start]);
                        out.push_str(REDACTED);
                        copied = param_end;
                        changed = true;
                    }
                }
                pos = param_end + 1;
            }
        }
        search = end.max(auth_start);
        if search >= text.len() {
            break;
        }
    }
    if !changed {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_userinfo_are_redacted() {
        assert_eq!(
            redact_uri("postgres://rxgate:wrong@127.0.0.1:5432/rxgate_catalog"),
            "postgres://rxgate:***@127.0.0.1:5432/rxgate_catalog"
        );
        assert_eq!(redact_uri("postgresql://u:p@ss@h/db"), "postgresql://u:***@h/db");
        assert_eq!(redact_uri("hdfs://alice:pw@nn:8020/x?y=1"), "hdfs://alice:***@nn:8020/x?y=1");
        // No password, no userinfo, no URI: unchanged (and not copied).
        for s in [
            "postgres://rxgate@h/db",
            "postgres://h:5432/db",
            "sqlite:var/catalog.db",
            "file:///srv/w",
            "s3://bucket/a@b:c",
            "plain text",
            "postgres://u:@h/db",
        ] {
            assert!(matches!(redact_secrets(s), Cow::Borrowed(_)), "{s}");
        }
    }

    #[test]
    fn secret_query_parameters_are_redacted() {
        assert_eq!(
            redact_uri("postgres://h/db?user=rx&password=s3cr3t&sslmode=require"),
            "postgres://h/db?user=rx&password=***&sslmode=require"
        );
        assert_eq!(redact_uri("postgres://h/db?PASSWORD=x#frag"), "postgres://h/db?PASSWORD=***#frag");
        assert_eq!(redact_uri("postgres://h/db?password="), "postgres://h/db?password=");
    }

    #[test]
    fn every_uri_in_a_text_is_redacted() {
        let text = "catalog postgres://rxgate:wrong@db:5432/c unreachable; \
                    LOCATION 's3://k:v@bucket/p' and \"hdfs://a:b@nn/x?token=t\" end";
        let got = redact_secrets(text);
        assert_eq!(
            got,
            "catalog postgres://rxgate:***@db:5432/c unreachable; \
             LOCATION 's3://k:***@bucket/p' and \"hdfs://a:***@nn/x?token=***\" end"
        );
        for secret in ["wrong", ":v@", "b@nn", "token=t"] {
            assert!(!got.contains(secret), "{secret} in {got}");
        }
        assert_eq!(redact_secrets("a :// b"), "a :// b");
        assert_eq!(redact_secrets("ends with ://"), "ends with ://");
        assert_eq!(redact_secrets("x://é:ü@h/ü"), "x://é:***@h/ü");
    }
}
