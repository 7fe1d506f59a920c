//! `GET /fhir/R4/{slug}/{env}/export-file/{jobId}/{fileId}`: the upstream file, streamed as it arrives
//! (attachment URLs rewritten on the way), and `…/export-attachment/{jobId}/{link}`.

use crate::api::error::Failure;
use crate::auth::Caller;
use crate::connectors::files::FileRequestHeaders;
use crate::fhir::attachments::NdjsonRewriter;
use crate::service::attachments::open_attachment;
use crate::service::export::{LinkMaker, open_export_file};
use crate::state::AppState;
use actix_web::HttpResponseBuilder;
use actix_web::http::StatusCode;
use actix_web::http::header::{ACCEPT, ACCEPT_ENCODING, CONTENT_TYPE, RANGE};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::{Stream, StreamExt};

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
    let pass_on = pass_on(&req);
    let opened = open_export_file(&state, &caller, slug, env, job, file, &pass_on).await?;
    let (upstream, log_id) = (opened.response, opened.log_id);
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::OK);
    let mut res = HttpResponse::build(status);
    res.insert_header((CONTENT_TYPE, "application/fhir+ndjson"));
    res.insert_header(("X-Request-ID", log_id.to_string()));
    let rewriting = opened.links.is_some();
    for name in PASSED_BACK {
        // A rewritten file's length and ranges are not the EHR's.
        if rewriting && matches!(name, "content-length" | "content-range" | "accept-ranges") {
            continue;
        }
        pass_back(&mut res, &upstream, name);
    }
    if rewriting {
        res.insert_header(("Accept-Ranges", "none"));
    }
    let body = counted(&state, slug, env, log_id, upstream.bytes_stream());
    Ok(match opened.links {
        Some(links) => res.streaming(rewritten(body, links)),
        None => res.streaming(body),
    })
}

/// `GET /fhir/R4/{slug}/{env}/export-attachment/{jobId}/{link}`: an attachment the EHR's NDJSON
/// pointed at, fetched with the destination's credentials and streamed as it arrives.
pub async fn attachment(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<super::AttachmentPath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let p = path.into_inner();
    let mut pass_on = pass_on(&req);
    // What the partner accepts, else anything: an attachment is whatever type the EHR stored.
    pass_on.accept = Some(
        req.headers()
            .get(ACCEPT)
            .and_then(|v| reqwest::header::HeaderValue::from_bytes(v.as_bytes()).ok())
            .unwrap_or_else(|| reqwest::header::HeaderValue::from_static("*/*")),
    );
    let (upstream, log_id) = open_attachment(
        &state, &caller, &p.slug, &p.env, &p.job_id, &p.link, &pass_on,
    )
    .await?;
    let status = StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::OK);
    let mut res = HttpResponse::build(status);
    res.insert_header(("X-Request-ID", log_id.to_string()));
    for name in PASSED_BACK
        .iter()
        .chain(&["content-type", "content-disposition"])
    {
        pass_back(&mut res, &upstream, name);
    }
    let body = counted(&state, &p.slug, &p.env, log_id, upstream.bytes_stream());
    Ok(res.streaming(body))
}

/// The partner's headers the gateway passes on to the EHR for a file (which is always asked for as
/// NDJSON).
fn pass_on(req: &HttpRequest) -> FileRequestHeaders {
    let convert = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &actix_web::http::header::HeaderValue| {
                reqwest::header::HeaderValue::from_bytes(v.as_bytes()).ok()
            })
    };
    FileRequestHeaders {
        accept: None,
        range: convert(RANGE),
        accept_encoding: convert(ACCEPT_ENCODING),
    }
}

fn pass_back(res: &mut HttpResponseBuilder, upstream: &reqwest::Response, name: &str) {
    if let Some(v) = upstream.headers().get(name)
        && let Ok(v) = actix_web::http::header::HeaderValue::from_bytes(v.as_bytes())
    {
        res.insert_header((name, v));
    }
}

/// The upstream body, counted in the metrics. An upstream failure mid-stream becomes a stream error:
/// actix aborts the connection, so the partner sees a failed download rather than a short file passed
/// off as whole.
fn counted(
    state: &AppState,
    slug: &str,
    env: &str,
    log_id: uuid::Uuid,
    stream: impl Stream<Item = reqwest::Result<Bytes>> + 'static,
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> + 'static {
    let metrics = state.metrics.clone();
    let (destination, environment) = (slug.to_owned(), env.to_owned());
    stream.map(move |chunk| {
        if let Ok(bytes) = &chunk {
            metrics.bytes_streamed(&destination, &environment, bytes.len() as u64);
        }
        chunk.map_err(|e| {
            tracing::warn!(message = "Upstream file stream failed mid-way; aborting the download.", log_id = %log_id, error = %e);
            actix_web::error::ErrorBadGateway("upstream file stream failed")
        })
    })
}

/// `body` with its attachment URLs rewritten by `links`, chunk by chunk.
fn rewritten<S>(body: S, links: LinkMaker) -> impl Stream<Item = Result<Bytes, actix_web::Error>>
where
    S: Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
{
    let rewriter = NdjsonRewriter::new(links);
    futures_util::stream::unfold(
        (Box::pin(body), Some(rewriter)),
        |(mut body, mut rewriter)| async move {
            let r = rewriter.as_mut()?;
            loop {
                match body.next().await {
                    Some(Ok(chunk)) => {
                        let mut out = Vec::with_capacity(chunk.len() + 1024);
                        r.push(&chunk, &mut out);
                        if !out.is_empty() {
                            return Some((Ok(Bytes::from(out)), (body, rewriter)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (body, None))),
                    None => {
                        let mut out = Vec::new();
                        r.finish(&mut out);
                        return Some((Ok(Bytes::from(out)), (body, None)));
                    }
                }
            }
        },
    )
}
