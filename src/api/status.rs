//! `GET` and `DELETE /fhir/R4/{slug}/{env}/export-status/{jobId}`.

use super::{JobPath, PagePath};
use crate::api::error::{FHIR_JSON, Failure};
use crate::auth::Caller;
use crate::fhir::OperationOutcome;
use crate::service::export::{StatusView, delete_export, export_page, export_status};
use crate::state::AppState;
use actix_web::http::header::{CONTENT_TYPE, EXPIRES, RETRY_AFTER};
use actix_web::{HttpResponse, web};

pub async fn status(
    caller: Caller,
    path: web::Path<JobPath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let p = path.into_inner();
    Ok(answer(
        export_status(&state, &caller, &p.slug, &p.env, &p.job_id).await?,
    ))
}

/// `GET …/export-manifest/{jobId}/{page}`: a further manifest page, answered like the status.
pub async fn page(
    caller: Caller,
    path: web::Path<PagePath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let p = path.into_inner();
    Ok(answer(
        export_page(&state, &caller, &p.slug, &p.env, &p.job_id, &p.page).await?,
    ))
}

/// 202 with `Retry-After` (and the partial manifest page, when there is one), or 200 with the page.
fn answer(view: StatusView) -> HttpResponse {
    match view {
        StatusView::InProgress {
            progress,
            retry_after,
            manifest,
        } => {
            let mut res = HttpResponse::Accepted();
            res.insert_header((RETRY_AFTER, retry_after.to_string()));
            if let Some(p) = progress {
                res.insert_header(("X-Progress", p));
            }
            match manifest {
                Some(m) => res
                    .insert_header((CONTENT_TYPE, "application/json"))
                    .body(m.to_string()),
                None => res.finish(),
            }
        }
        StatusView::Complete { manifest, expires } => {
            let mut res = HttpResponse::Ok();
            res.insert_header((CONTENT_TYPE, "application/json"));
            if let Some(e) = expires {
                res.insert_header((EXPIRES, e));
            }
            res.body(manifest)
        }
    }
}

pub async fn delete(
    caller: Caller,
    path: web::Path<JobPath>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, Failure> {
    let p = path.into_inner();
    let log_id = delete_export(&state, &caller, &p.slug, &p.env, &p.job_id).await?;
    Ok(HttpResponse::Accepted()
        .insert_header((CONTENT_TYPE, FHIR_JSON))
        .insert_header(("X-Request-ID", log_id.to_string()))
        .json(OperationOutcome::accepted(
            "The export and its files were deleted.",
            &[],
        )))
}
