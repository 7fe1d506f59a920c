//! Attachments through the gateway: the EHR's attachment URLs in NDJSON become
//! `…/export-attachment/{jobId}/{link}` URLs, and a partner's `GET` of one is fetched from the EHR with
//! the destination's credentials, under the rules for files.
//!
//! A link is the EHR's URL sealed (ChaCha20-Poly1305, the job id as associated data) with a key the
//! gateway makes once and keeps in its store, so links survive restarts, work on every replica, name no
//! EHR, and open only under the job they were made for. The nonce is derived from the job and URL, so
//! the same attachment always gets the same link.

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

/// The store's name for the key.
const KEY_NAME: &str = "attachment-links";
const NONCE_LEN: usize = 12;

/// Seals and opens attachment links.
pub struct LinkSealer {
    aead: aead::LessSafeKey,
    nonces: hmac::Key,
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
        let key = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, enc.as_ref())
            .map_err(|_| "attachment link key of the wrong length".to_owned())?;
        Ok(LinkSealer {
            aead: aead::LessSafeKey::new(key),
            nonces: hmac::Key::new(hmac::HMAC_SHA256, nonces.as_ref()),
        })
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
/// EHR's FHIR base), becomes the gateway's link; anything else is left alone.
pub fn link_maker(
    state: &AppState,
    connector: &Connector,
    job: Uuid,
) -> impl FnMut(&str) -> Option<String> + Send + 'static {
    let links = state.links.clone();
    let prefix = format!(
        "{}/export-attachment/{job}/",
        state.fhir_base(connector.slug.as_str(), connector.environment)
    );
    let base = connector.base_url.as_str().trim_end_matches('/').to_owned() + "/";
    let fhir_base = Url::parse(&base).ok();
    let origin = connector.base_url.origin();
    let file_hosts = connector.file_hosts.clone();
    move |text: &str| {
        let url = match Url::parse(text) {
            Ok(u) => u,
            Err(url::ParseError::RelativeUrlWithoutBase) if !text.starts_with('#') => {
                fhir_base.as_ref()?.join(text).ok()?
            }
            Err(_) => return None,
        };
        let ehr = matches!(url.scheme(), "http" | "https")
            && (url.origin() == origin
                || url
                    .host_str()
                    .is_some_and(|h| file_hosts.iter().any(|f| f.eq_ignore_ascii_case(h))));
        if !ehr {
            return None;
        }
        links
            .seal(job, url.as_str())
            .map(|link| format!("{prefix}{link}"))
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
    let url = state.links.open(job.id, link).ok_or_else(none)?;
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
        416 => Err(fail(GatewayError::RangeNotSatisfiable)),
        status => {
            let headers = response.headers().clone();
            let body = response.bytes().await.unwrap_or_default();
            let answer = crate::connectors::http::UpstreamAnswer {
                status,
                headers,
                body,
            };
            Err(fail(GatewayError::Upstream(
                crate::connectors::classify_failure(
                    &answer,
                    "an attachment request",
                    connector.max_retry_after_secs,
                ),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
