//! A minimal, fast Bulk Data upstream for load tests and benchmarks:
//! every `$export` gets 202 + Content-Location; the status URL answers a manifest listing a 100 MiB and a
//! 1 GiB NDJSON file of Observations and a 1 GiB file of DocumentReferences with attachments,
//! generated as they are sent (nothing is held in memory).
//! Run: `cargo run --release --example fake_upstream -- 127.0.0.1:18090`.

use actix_web::web::Bytes;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use futures_util::stream;

const MIB: u64 = 1024 * 1024;

async fn kickoff(req: HttpRequest) -> HttpResponse {
    // On the server's own origin, as a real EHR answers (the gateway refuses any other).
    let host = req.connection_info().host().to_owned();
    HttpResponse::Accepted()
        .insert_header((
            "Content-Location",
            format!("http://{host}/bulk-export/jobs/1"),
        ))
        .finish()
}

async fn status(req: HttpRequest) -> HttpResponse {
    let host = req.connection_info().host().to_owned();
    HttpResponse::Ok().json(serde_json::json!({
        "transactionTime": "2025-01-01T00:00:00Z",
        "request": format!("http://{host}/fhir/Group/g/$export"),
        "requiresAccessToken": true,
        "output": [
            {"type": "Observation", "url": format!("http://{host}/files/{}", 100 * MIB)},
            {"type": "Observation", "url": format!("http://{host}/files/{}", 1024 * MIB)},
            {"type": "DocumentReference", "url": format!("http://{host}/documents/{}", 1024 * MIB)}
        ],
        "error": []
    }))
}

/// `bytes` of NDJSON Observations, sent in 64 KiB chunks of one prepared buffer.
async fn file(path: web::Path<u64>) -> HttpResponse {
    let line = b"{\"resourceType\":\"Observation\",\"id\":\"obs\",\"status\":\"final\",\"valueQuantity\":{\"value\":72}}\n";
    ndjson(path.into_inner(), line)
}

/// `bytes` of NDJSON DocumentReferences, each with an attachment on this server (as Binary URLs are
/// on an EHR's origin): the gateway rewrites every one.
async fn documents(req: HttpRequest, path: web::Path<u64>) -> HttpResponse {
    let host = req.connection_info().host().to_owned();
    let line = format!(
        "{{\"resourceType\":\"DocumentReference\",\"id\":\"doc\",\"status\":\"current\",\"type\":{{\"text\":\"Discharge summary\"}},\"subject\":{{\"reference\":\"Patient/p\"}},\"content\":[{{\"attachment\":{{\"contentType\":\"application/pdf\",\"url\":\"http://{host}/fhir/Binary/doc-0001\"}}}}]}}\n"
    );
    ndjson(path.into_inner(), line.as_bytes())
}

/// `total` bytes of `line` repeated, in chunks of whole lines of about 256 KiB (the last one cut short).
/// (With 64 KiB chunks the DocumentReference file went out at a third of the Observation file's rate
/// on the development machine, which flattered any comparison against it.)
fn ndjson(total: u64, line: &[u8]) -> HttpResponse {
    let per_chunk = (256 * 1024 / line.len()).max(1);
    let chunk: Vec<u8> = line.repeat(per_chunk);
    let chunk = Bytes::from(chunk);
    let body = stream::unfold(0u64, move |sent| {
        let chunk = chunk.clone();
        async move {
            if sent >= total {
                return None;
            }
            let n = (total - sent).min(chunk.len() as u64) as usize;
            Some((Ok::<_, actix_web::Error>(chunk.slice(..n)), sent + n as u64))
        }
    });
    HttpResponse::Ok()
        .content_type("application/fhir+ndjson")
        .no_chunking(total)
        .streaming(body)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    let workers = std::env::var("FAKE_UPSTREAM_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    HttpServer::new(|| {
        App::new()
            .route("/bulk-export/jobs/{id}", web::get().to(status))
            .route("/files/{bytes}", web::get().to(file))
            .route("/documents/{bytes}", web::get().to(documents))
            .default_service(web::to(kickoff))
    })
    .workers(workers)
    .bind(addr)?
    .run()
    .await
}
