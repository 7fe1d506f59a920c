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
    /// The host is kept for the log; the partner is told what happened without it.
    #[error("the file host is neither the destination's origin nor in its file_hosts")]
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
    /// What the partner accepts (attachments); files ask for NDJSON.
    pub accept: Option<HeaderValue>,
    pub range: Option<HeaderValue>,
    pub accept_encoding: Option<HeaderValue>,
}

/// Every address of the IANA special-purpose registries (IPv4 and IPv6) counts as non-public: loopback,
/// private, shared (CGN), link-local, unspecified, broadcast, multicast, documentation, benchmarking,
/// reserved and protocol-assignment ranges; and in IPv6 the unique-local, link-local and site-local
/// ranges plus every form that carries an IPv4 address inside (IPv4-mapped and -compatible, NAT64
/// `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32`), judged by that address.
pub fn is_non_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0                                   // 0.0.0.0/8 "this network"
                || (a == 100 && (64..128).contains(&b))     // 100.64.0.0/10 shared address space
                || (a == 192 && b == 0 && c == 0)           // 192.0.0.0/24 protocol assignments
                || (a == 192 && b == 88 && c == 99)         // 192.88.99.0/24 6to4 relay anycast
                || (a == 198 && (b & 0xfe) == 18)           // 198.18.0.0/15 benchmarking
                || a >= 240 // 240.0.0.0/4 reserved
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || seg[0..5] == [0, 0, 0, 0, 0]                    // ::/80: IPv4-compatible, -mapped
                || (seg[0] & 0xfe00) == 0xfc00                     // fc00::/7 unique local
                || (seg[0] & 0xffc0) == 0xfe80                     // fe80::/10 link-local
                || (seg[0] & 0xffc0) == 0xfec0                     // fec0::/10 site-local
                || (seg[0] == 0x0064 && seg[1] == 0xff9b)          // 64:ff9b::/96, 64:ff9b:1::/48 NAT64
                || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0])    // 100::/64 discard
                || (seg[0] == 0x2001 && seg[1] < 0x0200)           // 2001::/23 IETF: Teredo, benchmarking, ORCHID
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)          // 2001:db8::/32 documentation
                || seg[0] == 0x2002                                // 2002::/16 6to4
                || (seg[0] == 0x3fff && seg[1] < 0x1000)           // 3fff::/20 documentation
                || seg[0] == 0x5f00 // 5f00::/16 segment routing
        }
    }
}

#[cfg(test)]
mod address_tests {
    use super::is_non_public;
    use std::net::IpAddr;

    #[test]
    fn every_special_purpose_range_is_non_public_and_public_addresses_are_not() {
        for text in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.99",
            "203.0.113.5",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "192.88.99.1",
            "::1",
            "::",
            "::ffff:169.254.169.254",
            "::ffff:8.8.8.8",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::808:808",
            "64:ff9b:1::1",
            "2002:a9fe:a9fe::1",
            "2001::1",
            "2001:2::1",
            "2001:db8::1",
            "3fff::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "5f00::1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert!(is_non_public(ip), "{text} must be refused");
        }
        for text in [
            "8.8.8.8",
            "1.1.1.1",
            "151.101.1.69",
            "2606:4700::1111",
            "2a00:1450:4001::1",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert!(!is_non_public(ip), "{text} is public");
        }
    }
}

impl Connector {
    /// Whether a text names the EHR: an http(s) URL on its origin or a file host, or any text holding
    /// the origin's host (with its port, when the base URL gives one) or a file host's name. Such text
    /// never reaches the partner as the EHR sent it.
    pub fn names_ehr(&self, text: &str) -> bool {
        if let Ok(url) = Url::parse(text)
            && matches!(url.scheme(), "http" | "https")
            && self.file_host_allowed(&url)
        {
            return true;
        }
        let lower = text.to_ascii_lowercase();
        let origin_host = match (self.base_url.host_str(), self.base_url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return false,
        };
        lower.contains(&origin_host.to_ascii_lowercase())
            || self
                .file_hosts
                .iter()
                .any(|h| !h.is_empty() && lower.contains(&h.to_ascii_lowercase()))
    }

    /// Whether files may be fetched from `url`'s host.
    pub fn file_host_allowed(&self, url: &Url) -> bool {
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
                let host = url.host_str().unwrap_or_default().to_owned();
                tracing::warn!(message = "File host not allowed.", log_id = %log_id, destination = %self.slug, host = %host);
                return Err(FileError::HostNotAllowed(host));
            }
            self.check_address(&url).await?;
            let mut headers = HeaderMap::new();
            headers.insert(
                ACCEPT,
                pass_on
                    .accept
                    .clone()
                    .unwrap_or_else(|| HeaderValue::from_static("application/fhir+ndjson")),
            );
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
            let files = self.http().files();
            let request = files
                .get(url.clone())
                .headers(headers)
                .build()
                .map_err(|e| FileError::Transport(classify(e)))?;
            let response =
                super::http::execute(files, request, super::http::Resend::WhenClosedUnanswered)
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

    fn connector(base: &str, file_hosts: &[&str]) -> super::Connector {
        let http = super::super::http::UpstreamClient::new(
            &crate::config::UpstreamSettings::default(),
            std::sync::Arc::new(crate::observe::metrics::Metrics::new()),
        )
        .unwrap();
        super::Connector::new(
            crate::domain::DestinationSlug::try_from("ehr").unwrap(),
            crate::domain::EnvironmentFlag::try_from("Production").unwrap(),
            None,
            "EHR".into(),
            crate::domain::Vendor::BulkData,
            url::Url::parse(base).unwrap(),
            super::super::profile_capabilities(crate::domain::Vendor::BulkData),
            super::super::UpstreamAuth::None,
            http,
        )
        .with_file_policy(file_hosts.iter().map(|h| (*h).to_owned()).collect(), false)
    }

    #[tokio::test]
    async fn a_file_whose_kept_alive_connection_closes_unanswered_is_fetched_over_a_new_one() {
        use super::super::http::testing::closes_its_kept_alive_connection_on_the_second_request;
        let (addr, connections) = closes_its_kept_alive_connection_on_the_second_request().await;
        let c = connector(&format!("http://{addr}/fhir"), &[]).with_file_policy(vec![], true);
        let url = format!("http://{addr}/fhir/files/1.ndjson");
        let headers = super::FileRequestHeaders::default();
        for round in ["first", "second"] {
            let file = c.open_file(&url, false, &headers, uuid::Uuid::nil()).await;
            assert_eq!(file.map(|r| r.status().as_u16()).ok(), Some(200), "{round}");
        }
        assert_eq!(
            connections.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the first connection was reused, then a second opened"
        );
    }

    #[test]
    fn ipv6_literals_in_file_hosts_are_written_as_in_urls() {
        let c = connector(
            "https://ehr.example/fhir",
            &["[2001:db8::1]", "files.example"],
        );
        let allowed = |u: &str| c.file_host_allowed(&url::Url::parse(u).unwrap());
        assert!(allowed("https://[2001:db8::1]/x.ndjson"));
        assert!(
            allowed("https://[2001:DB8:0::1]:8443/x.ndjson"),
            "the same address"
        );
        assert!(allowed("https://FILES.example/x"));
        assert!(!allowed("https://[2001:db8::2]/x.ndjson"));
        assert!(c.names_ehr("see https://[2001:db8::1]/x"));
    }

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
