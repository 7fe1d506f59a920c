//! Dashboard sign-in: the operator types the admin key once and gets a session cookie.
//!
//! The cookie is `{expires}.{nonce}.{tag}`: `tag` is an HMAC-SHA256, under a key the store keeps for
//! every replica (`gateway_keys`, name `admin-ui-sessions`), of the expiry, the nonce and the admin
//! key's configured hash, so it cannot be forged, ends when it says, and ends for everyone when the
//! admin key changes. Signing out records the nonce as spent in the shared store (the table that
//! keeps used client-assertion ids), so a copied cookie dies on every replica too.
//!
//! Forms that change something carry a CSRF token, an HMAC of the session's nonce, on top of the
//! cookie's `SameSite=Strict`; the sign-in form is double-submit (a short-lived cookie and the same
//! value in the form).

use crate::state::AppState;
use crate::store::Store;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "fhirgate_session";
/// The sign-in form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "fhirgate_login";
/// Where both cookies are sent.
pub const COOKIE_PATH: &str = "/admin/ui";
/// Where signed-out sessions are recorded in the store's spent-id table.
const SIGNED_OUT: &str = "admin-ui-session";
const KEY_NAME: &str = "admin-ui-sessions";

/// The key sessions are signed with.
pub struct SessionKeys {
    key: hmac::Key,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(…)")
    }
}

/// A signed-in operator's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub nonce: String,
    pub expires: DateTime<Utc>,
}

/// Random bytes, hex-encoded.
pub fn random_hex(bytes: usize) -> Option<String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new().fill(&mut buf).ok()?;
    Some(hex::encode(buf))
}

impl SessionKeys {
    pub fn new(secret: &[u8]) -> SessionKeys {
        SessionKeys {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The key every replica shares, made on first use.
    pub async fn from_store(store: &dyn Store) -> anyhow::Result<SessionKeys> {
        let fresh = random_hex(32).ok_or_else(|| anyhow::anyhow!("no system randomness"))?;
        let kept = store.shared_secret(KEY_NAME, &fresh).await?;
        let secret = hex::decode(kept)?;
        Ok(SessionKeys::new(&secret))
    }

    fn tag(&self, parts: &[&str]) -> String {
        URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, parts.join("\n").as_bytes()).as_ref())
    }

    /// A new session for the holder of the admin key whose hash is `admin_hash`, and its cookie value.
    pub fn issue(
        &self,
        admin_hash: &str,
        now: DateTime<Utc>,
        ttl_secs: u64,
    ) -> Option<(Session, String)> {
        let nonce = random_hex(16)?;
        let at = now.timestamp().checked_add(i64::try_from(ttl_secs).ok()?)?;
        let expires = DateTime::from_timestamp(at, 0)?;
        let exp = at.to_string();
        let tag = self.tag(&["session", admin_hash, &exp, &nonce]);
        Some((
            Session {
                nonce: nonce.clone(),
                expires,
            },
            format!("{exp}.{nonce}.{tag}"),
        ))
    }

    /// The session a cookie value stands for, if it is one this gateway signed for this admin key and
    /// it has not expired (whether it was signed out is the store's to say: [`signed_out`]).
    pub fn verify(&self, admin_hash: &str, value: &str, now: DateTime<Utc>) -> Option<Session> {
        let mut parts = value.splitn(3, '.');
        let (exp, nonce, tag) = (parts.next()?, parts.next()?, parts.next()?);
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let expected = self.tag(&["session", admin_hash, exp, nonce]);
        if !bool::from(expected.as_bytes().ct_eq(tag.as_bytes())) {
            return None;
        }
        let expires = DateTime::from_timestamp(exp.parse().ok()?, 0)?;
        (expires > now).then(|| Session {
            nonce: nonce.to_owned(),
            expires,
        })
    }

    /// The CSRF token of `session`'s forms.
    pub fn csrf(&self, session: &Session) -> String {
        self.tag(&["csrf", &session.nonce])
    }

    /// Whether `token` is `session`'s CSRF token.
    pub fn csrf_ok(&self, session: &Session, token: &str) -> bool {
        bool::from(self.csrf(session).as_bytes().ct_eq(token.as_bytes()))
    }
}

/// Whether `session` was signed out (on any replica).
pub async fn signed_out(
    state: &AppState,
    session: &Session,
) -> Result<bool, crate::store::StoreError> {
    state.store.jti_used(SIGNED_OUT, &session.nonce).await
}

/// Records `session` as signed out until it would have expired.
pub async fn sign_out(state: &AppState, session: &Session) -> Result<(), crate::store::StoreError> {
    state
        .store
        .use_jti(SIGNED_OUT, &session.nonce, session.expires)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SessionKeys {
        SessionKeys::new(b"a secret for the tests of sessions")
    }

    #[test]
    fn a_session_verifies_under_the_key_and_admin_hash_it_was_issued_for() {
        let now = Utc::now();
        let (session, cookie) = keys().issue("hash-a", now, 600).expect("issued");
        assert_eq!(keys().verify("hash-a", &cookie, now), Some(session));
    }

    #[test]
    fn a_session_ends_when_it_expires_or_the_admin_key_changes() {
        let now = Utc::now();
        let (_, cookie) = keys().issue("hash-a", now, 600).expect("issued");
        assert_eq!(
            keys().verify("hash-a", &cookie, now + chrono::Duration::seconds(601)),
            None
        );
        assert_eq!(keys().verify("hash-b", &cookie, now), None);
        assert_eq!(
            SessionKeys::new(b"another key").verify("hash-a", &cookie, now),
            None
        );
    }

    #[test]
    fn a_forged_or_altered_cookie_is_refused() {
        let now = Utc::now();
        let (_, cookie) = keys().issue("hash-a", now, 600).expect("issued");
        let later = (now + chrono::Duration::days(30)).timestamp();
        let (_, rest) = cookie.split_once('.').expect("dotted");
        assert_eq!(
            keys().verify("hash-a", &format!("{later}.{rest}"), now),
            None
        );
        for bad in [
            "",
            "1.2.3",
            "x.y",
            "9999999999.00000000000000000000000000000000.AAAA",
        ] {
            assert_eq!(keys().verify("hash-a", bad, now), None, "{bad}");
        }
    }

    #[test]
    fn the_csrf_token_belongs_to_one_session() {
        let now = Utc::now();
        let (a, _) = keys().issue("h", now, 600).expect("issued");
        let (b, _) = keys().issue("h", now, 600).expect("issued");
        let token = keys().csrf(&a);
        assert!(keys().csrf_ok(&a, &token));
        assert!(!keys().csrf_ok(&b, &token));
        assert!(!keys().csrf_ok(&a, ""));
    }
}
