//! Fetching an export file: redirects followed by hand, Authorization only to the destination's own
//! origin and only when the manifest asks for it, hosts checked at every hop.

use super::Connector;
use super::http::{TransportError, classify};
use reqwest::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, HeaderMap, HeaderValue, LOCATION, RANGE,
};
use std::net::IpAddr;
use url::Url;
use uuid::Uuid;

/// Most redirects followed for one file (Oracle Health uses one).
pub const MAX_REDIRECTS: usize = 3;

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file host {0} is neither the destination's origin nor in its file_hosts")]
    HostNotAllowed(String),
    #[error("the file URL resolves to a loopback, private or link-local address")]
    PrivateAddress,
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("a redirect without a usable Location")]
    BadRedirect,
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Upstream(#[from] super::UpstreamError),
}

/// What the partner sends that the gateway passes on.
#[derive(Debug, Clone, Default)]
pub struct FileRequestHeaders {
    pub range: Option<HeaderValue>,
    pub accept_encoding: Option<HeaderValue>,
}

/// Loopback, private, link-local, unspecified and other non-public addresses.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let seg0 = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (seg0 & 0xfe00) == 0xfc00
                || (seg0 & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_non_public(IpAddr::V4(v4)))
        }
    }
}

impl Connector {
    /// Whether files may be fetched from `url`'s host.
    fn file_host_allowed(&self, url: &Url) -> bool {
        self.same_origin(url)
            || url.host_str().is_some_and(|h| {
                self.file_hosts
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(h))
            })
    }

    async fn check_address(&self, url: &Url) -> Result<(), FileError> {
        if self.allow_private_addresses {
            return Ok(());
        }
        let host = url.host_str().ok_or(FileError::BadRedirect)?;
        let port = url.port_or_known_default().unwrap_or(443);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|_| FileError::Transport(TransportError::Unreachable))?
                .map(|a| a.ip())
                .collect(),
        };
        if addrs.into_iter().any(is_non_public) {
            return Err(FileError::PrivateAddress);
        }
        Ok(())
    }

    /// Opens `url` for streaming. Redirects are followed up to [`MAX_REDIRECTS`]; every hop must be an
    /// allowed host; `Authorization` goes only to the destination's origin and only when
    /// `requires_token`. Returns the final response, whatever its status.
    pub async fn open_file(
        &self,
        url: &str,
        requires_token: bool,
        pass_on: &FileRequestHeaders,
        log_id: Uuid,
    ) -> Result<reqwest::Response, FileError> {
        let started = std::time::Instant::now();
        let result = self.follow_file(url, requires_token, pass_on, log_id).await;
        match &result {
            Ok(response) => {
                let status = response.status().as_u16();
                self.observe(
                    "file",
                    started,
                    Some(status),
                    super::outcome_of_status(status),
                    Some(response.headers()),
                );
            }
            Err(FileError::Upstream(e)) => self.observe("file", started, None, e.outcome(), None),
            Err(FileError::Transport(TransportError::Timeout)) => {
                self.observe("file", started, None, "timeout", None)
            }
            Err(FileError::Transport(_)) => {
                self.observe("file", started, None, "unreachable", None)
            }
            Err(_) => self.observe("file", started, None, "refused", None),
        }
        result
    }

    async fn follow_file(
        &self,
        url: &str,
        requires_token: bool,
        pass_on: &FileRequestHeaders,
        log_id: Uuid,
    ) -> Result<reqwest::Response, FileError> {
        let mut url = Url::parse(url).map_err(|_| FileError::BadRedirect)?;
        let token = if requires_token {
            self.current_token(None).await?
        } else {
            None
        };
        for hop in 0..=MAX_REDIRECTS {
            if !self.file_host_allowed(&url) {
                return Err(FileError::HostNotAllowed(
                    url.host_str().unwrap_or_default().to_owned(),
                ));
            }
            self.check_address(&url).await?;
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_static("application/fhir+ndjson"));
            if let Ok(v) = HeaderValue::from_str(&log_id.to_string()) {
                headers.insert("x-request-id", v);
            }
            if let Some(range) = &pass_on.range {
                headers.insert(RANGE, range.clone());
            }
            if let Some(enc) = &pass_on.accept_encoding {
                headers.insert(ACCEPT_ENCODING, enc.clone());
            }
            if self.same_origin(&url)
                && let Some(token) = &token
            {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| FileError::BadRedirect)?;
                v.set_sensitive(true);
                headers.insert(AUTHORIZATION, v);
            }
            let response = self
                .http()
                .files()
                .get(url.clone())
                .headers(headers)
                .send()
                .await
                .map_err(|e| FileError::Transport(classify(e)))?;
            if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(response);
            }
            if hop == MAX_REDIRECTS {
                break;
            }
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or(FileError::BadRedirect)?;
            url = url.join(location).map_err(|_| FileError::BadRedirect)?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(FileError::BadRedirect);
            }
        }
        Err(FileError::TooManyRedirects)
    }
}

#[cfg(test)]
mod tests {
    use super::is_non_public;

    #[test]
    fn loopback_private_and_link_local_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(is_non_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["52.95.110.1", "8.8.8.8", "2600:1f18::1"] {
            assert!(!is_non_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
