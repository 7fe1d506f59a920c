//! A minimal, fast Bulk Data upstream for load tests: every `$export` gets 202 + Content-Location.
//! Run: `cargo run --release --example fake_upstream -- 127.0.0.1:18090`.

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

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

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18090".to_owned());
    let workers = std::env::var("FAKE_UPSTREAM_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    HttpServer::new(|| App::new().default_service(web::to(kickoff)))
        .workers(workers)
        .bind(addr)?
        .run()
        .await
}
