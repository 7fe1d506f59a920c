//! `GET /fhir/R4/{slug}/{env}/export-file/{jobId}/{fileId}`: the upstream file, streamed as it arrives.

use crate::api::error::Failure;
use crate::auth::Caller;
use crate::connectors::files::FileRequestHeaders;
use crate::service::export::open_export_file;
use crate::state::AppState;
use actix_web::http::StatusCode;
use actix_web::http::header::{ACCEPT_ENCODING, CONTENT_TYPE, RANGE};
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;

/// Upstream headers a partner needs to resume or decode a download.
const PASSED_BACK: [&str; 6] = [
    "content-length",
    "content-range",
    "content-encoding",
    "accept-ranges",
    "etag",
    "last-modified",
];

pub async fn file(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<super::FilePath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let super::FilePath {
        slug,
        env,
        job_id: job,
        file_id: file,
    } = path.into_inner();
    let (slug, env, job, file) = (slug.as_str(), env.as_str(), job.as_str(), file.as_str());
    let convert = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &actix_web::http::header::HeaderValue| {
                reqwest::header::HeaderValue::from_bytes(v.as_bytes()).ok()
            })
    };
    let pass_on = FileRequestHeaders {
        range: convert(RANGE),
        accept_encoding: convert(ACCEPT_ENCODING),
    };
    let (upstream, log_id) =
        open_export_file(&state, &caller, slug, env, job, file, &pass_on).await?;
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::OK);
    let mut res = HttpResponse::build(status);
    res.insert_header((CONTENT_TYPE, "application/fhir+ndjson"));
    res.insert_header(("X-Request-ID", log_id.to_string()));
    for name in PASSED_BACK {
        if let Some(v) = upstream.headers().get(name)
            && let Ok(v) = actix_web::http::header::HeaderValue::from_bytes(v.as_bytes())
        {
            res.insert_header((name, v));
        }
    }
    // An upstream failure mid-stream becomes a stream error: actix aborts the connection, so the
    // partner sees a failed download rather than a short file passed off as whole.
    let metrics = state.metrics.clone();
    let (destination, environment) = (slug.to_owned(), env.to_owned());
    let stream = upstream.bytes_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            metrics.bytes_streamed(&destination, &environment, bytes.len() as u64);
        }
        chunk.map_err(|e| {
            tracing::warn!(message = "Upstream file stream failed mid-way; aborting the download.", log_id = %log_id, error = %e);
            actix_web::error::ErrorBadGateway("upstream file stream failed")
        })
    });
    Ok(res.streaming(stream))
}
