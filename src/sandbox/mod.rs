//! A simulated EHR Bulk Data server under `/sandbox/r4`, so a new user sees the whole flow with no EHR.
//! The sandbox connector calls it over HTTP like any EHR. Switches in `[sandbox]` make it behave like
//! the vendors in the seeds: Oracle Health's 307 to a file host that refuses Authorization, 429 for a
//! client's second concurrent export, Retry-After values.

pub mod data;

use crate::api::error::FHIR_JSON;
use crate::config::SandboxSettings;
use crate::domain::Issue;
use crate::fhir::OperationOutcome;
use actix_web::http::header::{AUTHORIZATION, CONTENT_TYPE, EXPIRES, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// One export the sandbox is running.
#[derive(Debug, Clone)]
struct SandboxJob {
    started: Instant,
    client: String,
    patients: Vec<usize>,
    types: Vec<String>,
    since: Option<DateTime<Utc>>,
    request: String,
}

/// Exports the sandbox keeps at once.
const MAX_SANDBOX_JOBS: usize = 10_000;

/// The sandbox's in-memory state (its exports live as long as the process, like an EHR's scratch space).
#[derive(Debug)]
pub struct Sandbox {
    settings: SandboxSettings,
    jobs: Mutex<HashMap<String, SandboxJob>>,
    /// Keys the pre-signed file URLs; new each start, like short-lived S3 signatures.
    signing_key: String,
}

impl Sandbox {
    pub fn new(settings: SandboxSettings) -> Self {
        Sandbox {
            settings,
            jobs: Mutex::new(HashMap::new()),
            signing_key: Uuid::new_v4().to_string(),
        }
    }

    fn progress_for(&self, job: &SandboxJob) -> Option<u64> {
        let total = Duration::from_secs_f64(self.settings.progress_secs);
        let elapsed = job.started.elapsed();
        (elapsed < total).then(|| (elapsed.as_secs_f64() / total.as_secs_f64() * 100.0) as u64)
    }

    fn signature(&self, job: &str, file: &str) -> String {
        let digest = Sha256::digest(format!("{}:{job}:{file}", self.signing_key).as_bytes());
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }
}

fn outcome(
    status: actix_web::http::StatusCode,
    code: crate::domain::IssueCode,
    msg: &str,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CONTENT_TYPE, FHIR_JSON))
        .json(OperationOutcome::from_issues(&[Issue::general(code, msg)]))
}

/// The sandbox's routes, mounted at the app root.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/sandbox")
            .route("/r4/Group/{group}/$export", web::get().to(kickoff))
            .route("/r4/Group/{group}/$export", web::post().to(kickoff))
            .route("/r4/Patient/$export", web::get().to(kickoff))
            .route("/r4/Patient/$export", web::post().to(kickoff))
            .route("/r4/$export", web::get().to(kickoff))
            .route("/r4/$export", web::post().to(kickoff))
            .route("/r4/jobs/{job}", web::get().to(status))
            .route("/r4/jobs/{job}", web::delete().to(delete))
            .route("/r4/files/{job}/{file}", web::get().to(file))
            .route("/s3/{job}/{file}", web::get().to(presigned_file)),
    );
}

/// Kick-off parameters from the query string and, for POST, a `Parameters` body.
fn parameters(req: &HttpRequest, body: &[u8]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(req.query_string().as_bytes())
            .into_owned()
            .collect();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        for p in v["parameter"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap_or_default().to_owned();
            let value = p
                .get("valueString")
                .or(p.get("valueInstant"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .or_else(|| p["valueReference"]["reference"].as_str().map(str::to_owned))
                .or_else(|| p.get("valueBoolean").map(Value::to_string));
            if let Some(value) = value {
                pairs.push((name, value));
            }
        }
    }
    pairs
}

async fn kickoff(req: HttpRequest, body: web::Bytes, sandbox: web::Data<Sandbox>) -> HttpResponse {
    use crate::domain::IssueCode;
    use actix_web::http::StatusCode;
    let client = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .to_owned();
    let mut patients: Vec<usize> = match req.match_info().get("group") {
        Some(group) => match data::GROUPS.iter().find(|(g, _)| *g == group) {
            Some((_, n)) => (0..*n).collect(),
            None => {
                return outcome(
                    StatusCode::NOT_FOUND,
                    IssueCode::NotFound,
                    "Group resource not found or not accessible",
                );
            }
        },
        None => (0..data::ALL_PATIENTS).collect(),
    };
    let mut types: Vec<String> = data::TYPES.iter().map(|t| (*t).to_owned()).collect();
    let mut since = None;
    let mut listed_patients = Vec::new();
    for (name, value) in parameters(&req, &body) {
        match name.as_str() {
            "_type" => {
                let wanted: Vec<String> = value.split(',').map(|t| t.trim().to_owned()).collect();
                if wanted.iter().any(|t| !data::TYPES.contains(&t.as_str())) {
                    return outcome(
                        StatusCode::BAD_REQUEST,
                        IssueCode::Processing,
                        "Unsupported resource type in _type parameter",
                    );
                }
                types = wanted;
            }
            "_since" => match DateTime::parse_from_rfc3339(&value) {
                Ok(t) => since = Some(t.with_timezone(&Utc)),
                Err(_) => {
                    return outcome(
                        StatusCode::BAD_REQUEST,
                        IssueCode::Value,
                        "_since is not an instant",
                    );
                }
            },
            "_outputFormat"
                if !["application/fhir+ndjson", "application/ndjson", "ndjson"]
                    .contains(&value.as_str()) =>
            {
                return outcome(
                    StatusCode::BAD_REQUEST,
                    IssueCode::NotSupported,
                    "Unsupported _outputFormat",
                );
            }
            "patient" => {
                if let Some(i) = value
                    .strip_prefix("Patient/sbx-pat-")
                    .and_then(|n| n.parse::<usize>().ok())
                {
                    listed_patients.push(i);
                }
            }
            _ => {}
        }
    }
    if !listed_patients.is_empty() {
        patients.retain(|p| listed_patients.contains(p));
    }
    let mut jobs = match sandbox.jobs.lock() {
        Ok(j) => j,
        Err(poisoned) => poisoned.into_inner(),
    };
    if sandbox.settings.one_export_per_client
        && jobs
            .values()
            .any(|j| j.client == client && sandbox.progress_for(j).is_some())
    {
        return HttpResponse::TooManyRequests()
            .insert_header((
                RETRY_AFTER,
                sandbox.settings.retry_after_secs.max(1).to_string(),
            ))
            .insert_header((CONTENT_TYPE, FHIR_JSON))
            .json(OperationOutcome::from_issues(&[Issue::general(
                IssueCode::Throttled,
                "Only one bulk export per client may be in progress.",
            )]));
    }
    let id = Uuid::new_v4().to_string();
    let request = format!("{}", req.uri());
    // Bounded like everything a caller can grow: the oldest exports go first.
    if jobs.len() >= MAX_SANDBOX_JOBS
        && let Some(oldest) = jobs
            .iter()
            .min_by_key(|(_, j)| j.started)
            .map(|(k, _)| k.clone())
    {
        jobs.remove(&oldest);
    }
    jobs.insert(
        id.clone(),
        SandboxJob {
            started: Instant::now(),
            client,
            patients,
            types,
            since,
            request,
        },
    );
    HttpResponse::Accepted()
        .insert_header((
            "Content-Location",
            format!("{}/sandbox/r4/jobs/{id}", origin(&req)),
        ))
        .insert_header((CONTENT_TYPE, FHIR_JSON))
        .json(OperationOutcome::accepted("Export request accepted.", &[]))
}

fn origin(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

fn find(sandbox: &Sandbox, id: &str) -> Option<SandboxJob> {
    let jobs = match sandbox.jobs.lock() {
        Ok(j) => j,
        Err(poisoned) => poisoned.into_inner(),
    };
    jobs.get(id).cloned()
}

async fn status(
    req: HttpRequest,
    job: web::Path<String>,
    sandbox: web::Data<Sandbox>,
) -> HttpResponse {
    use crate::domain::IssueCode;
    use actix_web::http::StatusCode;
    let id = job.as_str();
    let Some(job) = find(&sandbox, id) else {
        return outcome(
            StatusCode::NOT_FOUND,
            IssueCode::NotFound,
            "No such export job",
        );
    };
    if let Some(pct) = sandbox.progress_for(&job) {
        return HttpResponse::Accepted()
            .insert_header(("X-Progress", format!("{pct}% (sandbox)")))
            .insert_header((RETRY_AFTER, sandbox.settings.retry_after_secs.to_string()))
            .finish();
    }
    let base = origin(&req);
    let output: Vec<Value> = job
        .types
        .iter()
        .filter_map(|t| {
            let (_, count) = data::ndjson(t, &job.patients, job.since);
            (count > 0).then(|| json!({"type": t, "url": format!("{base}/sandbox/r4/files/{id}/{t}.ndjson"), "count": count}))
        })
        .collect();
    let manifest = json!({
        "transactionTime": crate::envelope::now_millis(),
        "request": format!("{base}{}", job.request),
        "requiresAccessToken": true,
        "output": output,
        "error": []
    });
    let expires = (Utc::now() + chrono::Duration::days(30))
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/json"))
        .insert_header((EXPIRES, expires))
        .json(manifest)
}

async fn delete(job: web::Path<String>, sandbox: web::Data<Sandbox>) -> HttpResponse {
    let id = job.as_str();
    let removed = match sandbox.jobs.lock() {
        Ok(mut j) => j.remove(id),
        Err(poisoned) => poisoned.into_inner().remove(id),
    };
    match removed {
        Some(_) => HttpResponse::Accepted().finish(),
        None => outcome(
            actix_web::http::StatusCode::NOT_FOUND,
            crate::domain::IssueCode::NotFound,
            "No such export job",
        ),
    }
}

fn ndjson_of(sandbox: &Sandbox, job: &str, file: &str) -> Option<Vec<u8>> {
    let job = find(sandbox, job)?;
    let rtype = file.strip_suffix(".ndjson")?;
    if !job.types.iter().any(|t| t == rtype) || sandbox.progress_for(&job).is_some() {
        return None;
    }
    Some(data::ndjson(rtype, &job.patients, job.since).0)
}

async fn file(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    sandbox: web::Data<Sandbox>,
) -> HttpResponse {
    let (job, file) = (path.0.as_str(), path.1.as_str());
    let Some(body) = ndjson_of(&sandbox, job, file) else {
        return outcome(
            actix_web::http::StatusCode::NOT_FOUND,
            crate::domain::IssueCode::NotFound,
            "No such file",
        );
    };
    if sandbox.settings.redirect_files {
        // Oracle Health: a 307 to short-lived pre-signed storage on another host.
        let info = req.connection_info();
        let port = info
            .host()
            .rsplit_once(':')
            .map(|(_, p)| format!(":{p}"))
            .unwrap_or_default();
        let location = format!(
            "{}://{}{port}/sandbox/s3/{job}/{file}?X-Amz-Expires=300&X-Amz-Signature={}",
            info.scheme(),
            sandbox.settings.file_host,
            sandbox.signature(job, file)
        );
        return HttpResponse::TemporaryRedirect()
            .insert_header(("Location", location))
            .finish();
    }
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/fhir+ndjson"))
        .body(body)
}

async fn presigned_file(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    sandbox: web::Data<Sandbox>,
) -> HttpResponse {
    use crate::domain::IssueCode;
    use actix_web::http::StatusCode;
    if req.headers().contains_key(AUTHORIZATION) {
        // What S3 says when a pre-signed URL also carries a bearer token.
        return outcome(
            StatusCode::BAD_REQUEST,
            IssueCode::Security,
            "Only one auth mechanism allowed",
        );
    }
    let (job, file) = (path.0.as_str(), path.1.as_str());
    let signed = url::form_urlencoded::parse(req.query_string().as_bytes())
        .any(|(k, v)| k == "X-Amz-Signature" && v == sandbox.signature(job, file));
    if !signed {
        return outcome(
            StatusCode::FORBIDDEN,
            IssueCode::Security,
            "Signature does not match",
        );
    }
    match ndjson_of(&sandbox, job, file) {
        Some(body) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, "application/fhir+ndjson"))
            .body(body),
        None => outcome(StatusCode::NOT_FOUND, IssueCode::NotFound, "No such file"),
    }
}
