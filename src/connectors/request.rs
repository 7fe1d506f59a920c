//! The upstream kick-off request, built as plain data: the `validate` CLI prints it, tests snapshot it,
//! and the HTTP layer sends it with the credential added last.

use super::capabilities::Capabilities;
use super::plan::KickoffPlan;
use crate::domain::Param;
use crate::fhir::parameters::write_parameters;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;
use serde_json::Value;
use url::Url;
use uuid::Uuid;

/// Characters left as they are in a query value: RFC 3986 unreserved, plus `,` `:` `/`, which FHIR
/// values use and query strings allow. Everything else (`&`, `=`, `+`, `?`, `#`, `%`, spaces…) is encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b',')
    .remove(b':')
    .remove(b'/');

/// A request to send upstream, without its Authorization header.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UpstreamRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

impl UpstreamRequest {
    /// A stable digest of what is asked of which upstream (`route` names the destination and
    /// environment), so a retried envelope can be told from a new request reusing a Log ID.
    pub fn fingerprint(&self, route: &str) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(route.as_bytes());
        h.update([0]);
        h.update(self.method.as_bytes());
        h.update([0]);
        h.update(self.url.as_bytes());
        h.update([0]);
        if let Some(body) = &self.body {
            h.update(body.to_string().as_bytes());
        }
        hex::encode(h.finalize())
    }
}

/// The `{base}/…/$export` URL for a plan, before any query.
pub fn operation_url(base: &Url, plan: &KickoffPlan) -> String {
    format!(
        "{}/{}",
        base.as_str().trim_end_matches('/'),
        plan.kickoff.level.operation_path()
    )
}

/// The partner's kick-off as the gateway accepted it, relative to the FHIR base: the operation and
/// the parameters sent on, in the query. `patient` is left out (it names patients; a manifest's
/// `request` must not).
pub fn partner_request(plan: &KickoffPlan) -> String {
    let mut out = plan.kickoff.level.operation_path();
    let mut first = true;
    for param in plan.kickoff.params.present() {
        if param == Param::Patient {
            continue;
        }
        for value in plan.kickoff.params.wire_values(param) {
            out.push(if first { '?' } else { '&' });
            first = false;
            out.push_str(param.as_str());
            out.push('=');
            out.extend(utf8_percent_encode(&value, QUERY_VALUE));
        }
    }
    out
}

/// Builds the kick-off: GET with the parameters in the query, or POST with a `Parameters` body when
/// the destination takes `patient` that way and the plan has patients.
pub fn kickoff_request(
    base: &Url,
    caps: &Capabilities,
    plan: &KickoffPlan,
    log_id: Uuid,
) -> UpstreamRequest {
    let params = &plan.kickoff.params;
    let prefer = if plan.lenient && caps.lenient {
        "respond-async, handling=lenient"
    } else {
        "respond-async"
    };
    let mut headers = vec![
        ("Accept", "application/fhir+json".to_owned()),
        ("Prefer", prefer.to_owned()),
        ("X-Request-ID", log_id.to_string()),
    ];
    let url = operation_url(base, plan);
    if params.has(Param::Patient) && caps.patient_by_post {
        headers.push(("Content-Type", "application/fhir+json".to_owned()));
        return UpstreamRequest {
            method: "POST",
            url,
            headers,
            body: Some(write_parameters(params)),
        };
    }
    let mut query = String::new();
    for param in params.present() {
        for value in params.wire_values(param) {
            query.push(if query.is_empty() { '?' } else { '&' });
            query.push_str(param.as_str());
            query.push('=');
            query.extend(utf8_percent_encode(&value, QUERY_VALUE));
        }
    }
    UpstreamRequest {
        method: "GET",
        url: url + &query,
        headers,
        body: None,
    }
}

#[cfg(test)]
mod tests {
    use super::UpstreamRequest;

    /// Stored with every job and compared with the next request of the same Log ID, so its bytes
    /// must not change between releases: this is SHA-256 over `route NUL method NUL url NUL`, in
    /// lowercase hex, as the gateway has always written it.
    #[test]
    fn a_requests_fingerprint_is_the_same_lowercase_sha256_hex_it_always_was() {
        let req = UpstreamRequest {
            method: "GET",
            url: "http://127.0.0.1:1/fhir/Group/g/$export?_type=Patient".into(),
            headers: vec![("Accept", "application/fhir+json".into())],
            body: None,
        };
        assert_eq!(
            req.fingerprint("load/Production"),
            "360a37e18465d70b3ec248fbaf2f3b15dfbe0f782429617f50492002e2fffb1f"
        );
    }
}
