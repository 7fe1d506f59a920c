//! Attachments through the gateway: the EHR's attachment URLs in NDJSON become
//! `…/export-attachment/{jobId}/{link}` URLs, and a partner's `GET` of one is fetched from the EHR with
//! the destination's credentials, under the rules for files.
//!
//! Links are made with a key the gateway makes once and keeps in its store, so they survive restarts,
//! work on every replica, and open only under the job they were made for; the gateway fetches only
//! what the EHR itself put in the export (a partner cannot make it fetch anything else with the
//! destination's credentials). Two forms:
//!
//! - `{tag}/{path}` for the common case, a plain path under the EHR's FHIR base (`Binary/123`): the
//!   path as a FHIR reference, with a keyed SipHash-1-3 tag over the job and path. Cheap enough to make
//!   for every line of a file as it streams.
//! - `{sealed}` for anything else (a query, another path, a `file_hosts` host): the whole URL sealed
//!   with ChaCha20-Poly1305, the job id as associated data, so it names nothing. The nonce is derived
//!   from the job and URL, so the same attachment always gets the same link.

use crate::auth::Caller;
use crate::connectors::Connector;
use crate::connectors::files::FileRequestHeaders;
use crate::error::{Failure, GatewayError};
use crate::state::AppState;
use crate::store::Store;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use ring::{aead, hmac};
use url::Url;
use uuid::Uuid;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `path` is a plain relative path a tag may stand for: `Type/id`-like segments of letters,
/// digits, `-`, `.` and `_`, none empty, `.` or `..`.
pub fn is_plain_path(path: &[u8]) -> bool {
    if path.is_empty() || path.len() > 1024 {
        return false;
    }
    let mut segment_start = 0;
    for (i, &b) in path.iter().enumerate() {
        match PLAIN[usize::from(b)] {
            SLASH => {
                if !plain_segment(&path[segment_start..i]) {
                    return false;
                }
                segment_start = i + 1;
            }
            OK => {}
            _ => return false,
        }
    }
    plain_segment(&path[segment_start..])
}

const NO: u8 = 0;
const OK: u8 = 1;
const SLASH: u8 = 2;

/// Which bytes a plain path may hold.
const PLAIN: [u8; 256] = {
    let mut table = [NO; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_' {
            table[b] = OK;
        }
        b += 1;
    }
    table[b'/' as usize] = SLASH;
    table
};

fn plain_segment(segment: &[u8]) -> bool {
    !segment.is_empty() && segment != b"." && segment != b".."
}

/// The store's name for the key.
const KEY_NAME: &str = "attachment-links";
const NONCE_LEN: usize = 12;

/// Seals and opens attachment links.
pub struct LinkSealer {
    aead: aead::LessSafeKey,
    nonces: hmac::Key,
    /// SipHash keys for the tags of plain paths.
    tags: (u64, u64),
}

impl std::fmt::Debug for LinkSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSealer([redacted])")
    }
}

impl LinkSealer {
    /// Both keys derived from `secret`.
    pub fn new(secret: &[u8]) -> Result<LinkSealer, String> {
        let master = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let enc = hmac::sign(&master, b"fhirgate attachment links: encryption");
        let nonces = hmac::sign(&master, b"fhirgate attachment links: nonces");
        let tags = hmac::sign(&master, b"fhirgate attachment links: tags");
        let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, enc.as_ref())
            .map_err(|_| "attachment link key of the wrong length".to_owned())?;
        let word = |range: std::ops::Range<usize>| {
            tags.as_ref()
                .get(range)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| "attachment tag key of the wrong length".to_owned())
        };
        Ok(LinkSealer {
            aead: aead::LessSafeKey::new(key),
            nonces: hmac::Key::new(hmac::HMAC_SHA256, nonces.as_ref()),
            tags: (word(0..8)?, word(8..16)?),
        })
    }

    /// The tag of a plain path under `job`: 64 bits of keyed SipHash-1-3, in hex. (A forger gets one
    /// guess per request; 2^64 of them is out of reach.)
    pub fn tag(&self, job: Uuid, path: &[u8]) -> [u8; 16] {
        use std::hash::Hasher;
        let mut h = siphasher::sip::SipHasher13::new_with_keys(self.tags.0, self.tags.1);
        h.write(job.as_bytes());
        h.write(path);
        let value = h.finish();
        let mut hex = [0u8; 16];
        for (i, out) in hex.iter_mut().enumerate() {
            *out = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
        }
        hex
    }

    /// The store's key, made (32 random bytes) the first time any replica asks.
    pub async fn from_store(store: &dyn Store) -> anyhow::Result<LinkSealer> {
        let mut fresh = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut fresh)
            .map_err(|_| anyhow::anyhow!("no randomness for the attachment link key"))?;
        let kept = store.shared_secret(KEY_NAME, &hex::encode(fresh)).await?;
        let secret = hex::decode(kept)
            .map_err(|_| anyhow::anyhow!("the stored attachment link key is not hex"))?;
        LinkSealer::new(&secret).map_err(|e| anyhow::anyhow!(e))
    }

    /// The link for `url` under `job`.
    pub fn seal(&self, job: Uuid, url: &str) -> Option<String> {
        let mut input = job.as_bytes().to_vec();
        input.extend_from_slice(url.as_bytes());
        let tag = hmac::sign(&self.nonces, &input);
        let nonce: [u8; NONCE_LEN] = tag.as_ref().get(..NONCE_LEN)?.try_into().ok()?;
        let mut sealed = url.as_bytes().to_vec();
        self.aead
            .seal_in_place_append_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(job.as_bytes()),
                &mut sealed,
            )
            .ok()?;
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        Some(URL_SAFE_NO_PAD.encode(token))
    }

    /// The URL behind a link, when it was sealed under `job` with this key.
    pub fn open(&self, job: Uuid, link: &str) -> Option<String> {
        let token = URL_SAFE_NO_PAD.decode(link).ok()?;
        if token.len() <= NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = token.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .aead
            .open_in_place(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(job.as_bytes()),
                &mut sealed,
            )
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// What the rewriter does with each attachment URL of `job`'s files: an absolute http(s) URL on the
/// destination's origin or a `file_hosts` host, or a relative one (`Binary/123`, resolved against the
/// EHR's FHIR base), becomes the gateway's link (written to the output as a JSON string); anything
/// else is left alone.
pub fn link_maker(
    state: &AppState,
    connector: &Connector,
    job: Uuid,
) -> impl FnMut(&[u8], &mut Vec<u8>) -> bool + Send + 'static {
    let links = state.links.clone();
    let prefix = format!(
        "{}/export-attachment/{job}/",
        state.fhir_base(connector.slug.as_str(), connector.environment)
    );
    let base = connector.base_url.as_str().trim_end_matches('/').to_owned() + "/";
    let fhir_base = Url::parse(&base).ok();
    let origin = connector.base_url.origin();
    let file_hosts = connector.file_hosts.clone();
    move |raw: &[u8], out: &mut Vec<u8>| {
        // The common case, without parsing: a plain path under the FHIR base, absolute or relative.
        let plain = match raw.strip_prefix(base.as_bytes()) {
            Some(rel) => Some(rel),
            None if memchr::memchr(b':', raw).is_none() => Some(raw),
            None => None,
        }
        .filter(|rel| is_plain_path(rel));
        if let Some(rel) = plain {
            out.push(b'"');
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(&links.tag(job, rel));
            out.push(b'/');
            out.extend_from_slice(rel);
            out.push(b'"');
            return true;
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            return false;
        };
        let url = match Url::parse(text) {
            Ok(u) => u,
            Err(url::ParseError::RelativeUrlWithoutBase) if !text.starts_with('#') => {
                match fhir_base.as_ref().and_then(|b| b.join(text).ok()) {
                    Some(u) => u,
                    None => return false,
                }
            }
            Err(_) => return false,
        };
        let ehr = matches!(url.scheme(), "http" | "https")
            && (url.origin() == origin
                || url
                    .host_str()
                    .is_some_and(|h| file_hosts.iter().any(|f| f.eq_ignore_ascii_case(h))));
        match links.seal(job, url.as_str()).filter(|_| ehr) {
            Some(sealed) => {
                // Base64url and the gateway's own prefix: nothing to escape.
                out.push(b'"');
                out.extend_from_slice(prefix.as_bytes());
                out.extend_from_slice(sealed.as_bytes());
                out.push(b'"');
                true
            }
            None => false,
        }
    }
}

/// The EHR URL behind a link of `job`, when this gateway made it.
fn resolve(state: &AppState, connector: &Connector, job: Uuid, link: &str) -> Option<String> {
    match link.split_once('/') {
        Some((tag, rel)) => {
            use subtle::ConstantTimeEq;
            let good = is_plain_path(rel.as_bytes())
                && bool::from(tag.as_bytes().ct_eq(&state.links.tag(job, rel.as_bytes())));
            good.then(|| connector.base_url.as_str().trim_end_matches('/').to_owned() + "/" + rel)
        }
        None => state.links.open(job, link),
    }
}

/// `GET …/export-attachment/{jobId}/{link}`: the attachment, fetched from the EHR with the destination's
/// credentials (sent only to its origin), every redirect hop checked as for files.
pub async fn open_attachment(
    state: &AppState,
    caller: &Caller,
    slug: &str,
    env: &str,
    job_id: &str,
    link: &str,
    pass_on: &FileRequestHeaders,
) -> Result<(reqwest::Response, Uuid), Failure> {
    let (connector, job) = super::export::find_job(state, caller, slug, env, job_id).await?;
    let fail = |e: GatewayError| Failure::new(e, Some(job.log_id));
    let none = || {
        fail(GatewayError::NotFound(
            "No such attachment in this export.".into(),
        ))
    };
    if job.manifest.is_none() {
        return Err(none());
    }
    let url = resolve(state, &connector, job.id, link).ok_or_else(none)?;
    let response = connector
        .open_file(&url, true, pass_on, job.log_id)
        .await
        .map_err(|e| {
            tracing::warn!(message = "Attachment download refused or failed.", log_id = %job.log_id, job_id = %job.id, error = %e);
            fail(super::export::file_error(e))
        })?;
    match response.status().as_u16() {
        200 | 206 => Ok((response, job.log_id)),
        404 | 410 => Err(fail(GatewayError::NotFound(
            "The EHR no longer has this attachment.".into(),
        ))),
        _ => Err(fail(
            super::export::download_refused(&connector, response, "an attachment request").await,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_path_is_a_fhir_reference_and_anything_else_is_not() {
        for ok in ["Binary/123", "Binary/a-b.c_d", "attachments/x/y.pdf"] {
            assert!(is_plain_path(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            "/Binary/1",
            "Binary//1",
            "../x",
            "a/../b",
            "Binary/1?x=1",
            "a b",
            "Binary/%2e",
        ] {
            assert!(!is_plain_path(bad.as_bytes()), "{bad}");
        }
        let sealer = LinkSealer::new(b"k").unwrap();
        let job = Uuid::new_v4();
        assert_eq!(sealer.tag(job, b"Binary/1"), sealer.tag(job, b"Binary/1"));
        assert_ne!(sealer.tag(job, b"Binary/1"), sealer.tag(job, b"Binary/2"));
        assert_ne!(
            sealer.tag(job, b"Binary/1"),
            sealer.tag(Uuid::new_v4(), b"Binary/1")
        );
    }

    #[test]
    fn a_link_opens_only_under_its_job_and_names_nothing() {
        let sealer = LinkSealer::new(b"test secret").unwrap();
        let (job, other) = (Uuid::new_v4(), Uuid::new_v4());
        let url = "https://ehr.example/fhir/Binary/123?sig=secret";
        let link = sealer.seal(job, url).unwrap();
        assert!(!link.contains("ehr") && !link.contains("secret"));
        assert_eq!(
            sealer.seal(job, url).unwrap(),
            link,
            "the same link every time"
        );
        assert_eq!(sealer.open(job, &link).as_deref(), Some(url));
        assert_eq!(sealer.open(other, &link), None);
        assert_eq!(sealer.open(job, "AAAA"), None);
        let mut tampered = link.clone().into_bytes();
        tampered[20] = if tampered[20] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            sealer.open(job, &String::from_utf8(tampered).unwrap()),
            None
        );
        let another_key = LinkSealer::new(b"another").unwrap();
        assert_eq!(another_key.open(job, &link), None);
    }
}
