//! The dashboard's pages: sign-in and sign-out, the message log and one message's story, the jobs and
//! one job with its actions.

use super::layout::{self, Section, dash, maybe_time, millis, page, pager, status, time};
use super::session::{self, LOGIN_COOKIE, SESSION_COOKIE};
use super::{Operator, UiError, cookie, html, same_origin, see_other};
use crate::api::admin::views::{JobDetail, JobView, LogDetail};
use crate::api::admin::{job_detail, job_query, jobs_page, log_detail, log_page, log_query};
use crate::error::GatewayError;
use crate::service::operator::{self, Action};
use crate::state::AppState;
use crate::store::{Job, JobState, LogRecord, RecordKind};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// What a failed store query or use case shows the operator: the status and the words the partner
/// API would give (never an EHR URL or credential).
fn ui_error(e: GatewayError) -> UiError {
    let words = e
        .issues()
        .into_iter()
        .map(|i| i.diagnostics)
        .collect::<Vec<_>>()
        .join(" ");
    UiError::Page(e.status(), words)
}

/// A path id, or a 404 page.
fn path_id(raw: &str) -> Result<Uuid, UiError> {
    Uuid::parse_str(raw)
        .map_err(|_| UiError::Page(StatusCode::NOT_FOUND, "There is no such page.".into()))
}

/// Where to go after signing in: a dashboard path, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/admin/ui/")
                && !n.contains("//")
                && !n.contains('\\')
                && !n.starts_with("/admin/ui/login")
                && !n.chars().any(char::is_control) =>
        {
            n.to_owned()
        }
        _ => "/admin/ui/messages".to_owned(),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(
        default,
        alias = "admin_key",
        alias = "adminKey",
        alias = "api_key",
        alias = "password"
    )]
    key: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

fn login_page(csrf: &str, next: &str, problem: Option<&str>) -> Markup {
    page(
        "Sign in",
        Section::None,
        None,
        html! {
            @if let Some(problem) = problem {
                p.notice.bad role="alert" { (problem) }
            }
            form.login method="post" action="/admin/ui/login" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="next" value=(next);
                label for="key" { "Admin key" }
                input #key type="password" name="key" autocomplete="current-password" required autofocus;
                p.hint { "The key whose SHA-256 is " code { "[admin] api_key_sha256" } ". A partner's key or token does not open the dashboard." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// A sign-in form with a fresh double-submit token.
fn login_answer(
    state: &AppState,
    status: StatusCode,
    next: &str,
    problem: Option<&str>,
) -> HttpResponse {
    let Some(token) = session::random_hex(16) else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            layout::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "No randomness for a sign-in form.",
            ),
        );
    };
    let mut res = html(status, login_page(&token, next, problem));
    let c = cookie(state, LOGIN_COOKIE, token, 1800);
    if let Err(e) = res.add_cookie(&c) {
        tracing::warn!(message = "Dashboard: cannot set the sign-in cookie.", error = %e);
    }
    res
}

/// `GET /admin/ui/login`
pub async fn login_form(state: web::Data<AppState>, query: web::Query<LoginQuery>) -> HttpResponse {
    let next = safe_next(query.next.as_deref());
    let problem =
        state.settings.admin.api_key_sha256.is_none().then_some(
            "No admin key is configured ([admin] api_key_sha256), so no one can sign in.",
        );
    login_answer(&state, StatusCode::OK, &next, problem)
}

/// `POST /admin/ui/login`: the admin key for a session cookie.
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let form = form.into_inner();
    let next = safe_next(form.next.as_deref());
    if let Some(peer) = req.peer_addr()
        && let Err(wait) = state.limits.check_login(peer.ip())
    {
        let mut res = login_answer(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &next,
            Some(&format!(
                "Too many sign-in attempts from this address; wait {wait} s and try again."
            )),
        );
        if let Some(v) = super::header_value(&wait.to_string()) {
            res.headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, v);
        }
        return res;
    }
    // The sign-in form's token, when the form and its cookie carry one, must be the pair this gateway
    // made; a sign-in from another site's page is refused by its Origin. (A forged sign-in would need
    // the admin key itself: there is no other account to be signed in to.)
    let token_ok = match (req.cookie(LOGIN_COOKIE), form.csrf.is_empty()) {
        (Some(c), false) => c.value() == form.csrf,
        (None, false) => false,
        (_, true) => true,
    };
    if !token_ok || !same_origin(&req, &state) {
        return login_answer(
            &state,
            StatusCode::FORBIDDEN,
            &next,
            Some("This sign-in form has expired or did not come from this gateway; try again."),
        );
    }
    let key = form.key.trim();
    let admin_hash = state.settings.admin.api_key_sha256.as_deref();
    let (Some(admin_hash), true) = (
        admin_hash,
        crate::auth::admin::key_matches(&state.settings, key),
    ) else {
        let problem = if !key.is_empty() && crate::auth::admin::is_partner_credential(&state, key) {
            "That is a partner credential; the dashboard takes only the admin key."
        } else {
            "That is not the admin key."
        };
        tracing::warn!(message = "Dashboard sign-in refused.");
        return login_answer(&state, StatusCode::UNAUTHORIZED, &next, Some(problem));
    };
    let ttl = state.settings.admin.session_ttl_secs;
    let Some((_, value)) =
        state
            .sessions
            .issue(&admin_hash.to_ascii_lowercase(), chrono::Utc::now(), ttl)
    else {
        return login_answer(
            &state,
            StatusCode::SERVICE_UNAVAILABLE,
            &next,
            Some("A session could not be made; try again."),
        );
    };
    tracing::info!(message = "Dashboard sign-in.");
    let mut res = see_other(&next);
    let session = cookie(
        &state,
        SESSION_COOKIE,
        value,
        i64::try_from(ttl).unwrap_or(i64::MAX),
    );
    let spent = cookie(&state, LOGIN_COOKIE, String::new(), 0);
    for c in [session, spent] {
        if let Err(e) = res.add_cookie(&c) {
            tracing::warn!(message = "Dashboard: cannot set a cookie.", error = %e);
        }
    }
    res
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Refuses a form post that did not come from this session's own page.
fn check_form(
    req: &HttpRequest,
    state: &AppState,
    op: &Operator,
    form: Option<&web::Form<CsrfForm>>,
) -> Result<(), UiError> {
    let token = form.map_or("", |f| f.csrf.as_str());
    if state.sessions.csrf_ok(&op.session, token) && same_origin(req, state) {
        Ok(())
    } else {
        Err(UiError::Page(
            StatusCode::FORBIDDEN,
            "This form did not come from this gateway's dashboard (its token is missing or stale); reload the page and try again.".into(),
        ))
    }
}

/// `POST /admin/ui/logout`
pub async fn logout(
    req: HttpRequest,
    op: Operator,
    state: web::Data<AppState>,
    form: Option<web::Form<CsrfForm>>,
) -> Result<HttpResponse, UiError> {
    check_form(&req, &state, &op, form.as_ref())?;
    session::sign_out(&state, &op.session).await?;
    tracing::info!(message = "Dashboard sign-out.");
    let mut res = see_other("/admin/ui/login");
    if let Err(e) = res.add_cookie(&cookie(&state, SESSION_COOKIE, String::new(), 0)) {
        tracing::warn!(message = "Dashboard: cannot clear the session cookie.", error = %e);
    }
    Ok(res)
}

/// The message log's filter form, filled with what was asked.
fn log_filters(query: &BTreeMap<String, String>) -> Markup {
    let v = |name: &str| query.get(name).cloned().unwrap_or_default();
    let kind = v("kind");
    html! {
        form.filters method="get" action="/admin/ui/messages" {
            label { "Log ID" input type="search" name="logId" value=(v("logId")) placeholder="d9f5d293-…" size="38"; }
            label { "Source" input type="text" name="source" value=(v("source")); }
            label { "Destination" input type="text" name="destination" value=(v("destination")); }
            label { "Environment" input type="text" name="environment" value=(v("environment")); }
            label { "Event type" input type="text" name="eventType" value=(v("eventType")) placeholder="group-export"; }
            label { "Status" input type="text" name="status" value=(v("status")) placeholder="4xx or 404" size="8"; }
            label { "Since (UTC)" input type="datetime-local" name="since" value=(v("since")); }
            label { "Until (UTC)" input type="datetime-local" name="until" value=(v("until")); }
            label { "Records"
                select name="kind" {
                    option value="request" selected[kind.is_empty() || kind == "request"] { "partner requests" }
                    option value="upstream" selected[kind == "upstream"] { "EHR calls" }
                    option value="all" selected[kind == "all"] { "both" }
                }
            }
            button type="submit" { "Search" }
            a.reset href="/admin/ui/messages" { "Clear" }
        }
    }
}

/// The query string as a map (the filter form's values), the last of each name.
fn query_map(req: &HttpRequest) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// What a record did, in a few words: `POST …/$export` for a request, the operation for an EHR call.
fn what(r: &LogRecord) -> Markup {
    match r.kind {
        RecordKind::Request => html! {
            span.method { (r.method.as_deref().unwrap_or("")) } " " code { (r.route) }
        },
        RecordKind::Upstream => html! { "EHR " (r.route) },
    }
}

fn log_id_link(id: &Uuid) -> Markup {
    html! { a.id href={ "/admin/ui/messages/" (id) } { (id) } }
}

fn job_link(id: &Uuid) -> Markup {
    html! { a.id href={ "/admin/ui/jobs/" (id) } { (id) } }
}

/// What was wrong with the filters, under the form that keeps what was typed.
fn refused_filters(issues: &[crate::domain::Issue]) -> Markup {
    html! { div.notice.bad role="alert" { @for issue in issues { p { (issue.diagnostics) } } } }
}

/// `GET /admin/ui/messages`: the message log with the admin API's filters, newest first.
pub async fn messages(
    op: Operator,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let query = query_map(&req);
    let (status, body) = match log_query(&req) {
        Err(GatewayError::Invalid(issues)) => (
            StatusCode::BAD_REQUEST,
            html! {
                (log_filters(&query))
                (refused_filters(&issues))
            },
        ),
        Err(e) => return Err(ui_error(e)),
        Ok((filter, limit, offset)) => {
            let page = log_page(&state, &filter, limit, offset)
                .await
                .map_err(ui_error)?;
            let (entries, total) = (page.entries, page.total);
            let paged = filter.before.is_some() || offset > 0;
            (
                StatusCode::OK,
                html! {
                    (log_filters(&query))
                    p.count {
                        @if page.capped { "At least " (total) " records match." }
                        @else { (total) " record" @if total != 1 { "s" } " match." }
                    }
                    @if entries.is_empty() {
                        p.empty { "Nothing recorded matches these filters." }
                    } @else {
                        table.log {
                            thead { tr {
                                th { "Time (UTC)" } th { "Log ID" } th { "Request" } th { "Source" }
                                th { "Destination" } th { "Event" } th { "Status" } th { "EHR" }
                                th { "Error" } th.num { "Duration" }
                            } }
                            tbody {
                                @for r in &entries {
                                    tr {
                                        td { (time(&r.time)) }
                                        td { (log_id_link(&r.log_id)) }
                                        td { (what(r)) }
                                        td { (r.source.as_deref().unwrap_or("")) }
                                        td { (r.destination.as_deref().unwrap_or("")) " " span.muted { (r.environment.as_deref().unwrap_or("")) } }
                                        td { (r.event_type.as_deref().unwrap_or("")) }
                                        td { (status(r.gateway_status)) }
                                        td { (status(r.upstream_status)) }
                                        td { (r.error_code.as_deref().unwrap_or("")) }
                                        td.num { (millis(r.duration_ms)) }
                                    }
                                }
                            }
                        }
                    }
                    (layout::cursor_pager("/admin/ui/messages", req.query_string(), paged, page.next.map(|c| c.encode())))
                },
            )
        }
    };
    Ok(html(
        status,
        page("Message log", Section::Messages, Some(&op.csrf), body),
    ))
}

/// `GET /admin/ui/messages/{logId}`: one message's story, oldest first.
pub async fn message(
    op: Operator,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let log_id = path_id(&path)?;
    let detail = log_detail(&state, log_id).await.map_err(ui_error)?;
    let body = timeline(&detail);
    Ok(html(
        StatusCode::OK,
        page(
            &format!("Message {log_id}"),
            Section::Messages,
            Some(&op.csrf),
            body,
        ),
    ))
}

fn timeline(detail: &LogDetail) -> Markup {
    let mut events: Vec<&LogRecord> = detail.requests.iter().chain(&detail.attempts).collect();
    events.sort_by_key(|r| r.time);
    let first = events.first().map(|r| r.time);
    html! {
        @if let Some(r) = detail.requests.first() {
            dl.facts {
                dt { "Source" } dd { (r.source.as_deref().unwrap_or("–")) }
                dt { "Destination" } dd { (r.destination.as_deref().unwrap_or("–")) " " (r.environment.as_deref().unwrap_or("")) }
                dt { "Event type" } dd { (r.event_type.as_deref().unwrap_or("–")) }
            }
        }
        h2 { "Timeline" }
        @if events.is_empty() {
            p.empty { "No requests are recorded under this Log ID (they may be older than the retention period)." }
        }
        ol.timeline {
            @for r in &events {
                @let upstream = r.kind == RecordKind::Upstream;
                li.upstream[upstream] {
                    div.when {
                        (time(&r.time))
                        @if let Some(first) = first {
                            " " span.muted { "+" (millis((r.time - first).num_microseconds().unwrap_or(0) as f64 / 1000.0)) }
                        }
                    }
                    div.what {
                        span.kind { @if upstream { "gateway → EHR" } @else { "partner → gateway" } }
                        " " (what(r))
                        @if let Some(e) = &r.event_type { " " span.muted { "(" (e) ")" } }
                    }
                    div.outcome {
                        @if upstream {
                            "EHR " (status(r.upstream_status))
                        } @else {
                            (status(r.gateway_status))
                            @if r.upstream_status.is_some() { " EHR " (status(r.upstream_status)) }
                        }
                        " in " (millis(r.duration_ms))
                        @if let Some(code) = &r.error_code { " " span.error { (code) } }
                        @if let Some(id) = &r.upstream_request_id { " " span.muted { "EHR request id " code { (id) } } }
                        @if let Some(job) = &r.job_id { " job " (job_link(job)) }
                    }
                }
            }
        }
        h2 { "Jobs" }
        (job_table(&detail.jobs))
    }
}

fn job_table(jobs: &[JobView]) -> Markup {
    html! {
        @if jobs.is_empty() {
            p.empty { "No jobs." }
        } @else {
            table.jobs {
                thead { tr {
                    th { "Created (UTC)" } th { "Job" } th { "State" } th { "Destination" } th { "Event" }
                    th.num { "Attempts" } th { "Last EHR status" } th { "Next poll" } th { "Updated" }
                } }
                tbody {
                    @for j in jobs {
                        tr {
                            td { (time(&j.created_at)) }
                            td { (job_link(&j.id)) }
                            td { (layout::state(&j.state)) }
                            td { (j.destination) " " span.muted { (j.environment) } }
                            td { (j.event_type) }
                            td.num { (j.attempts) }
                            td { (status(j.last_upstream_status)) }
                            td { (maybe_time(j.next_poll_at.as_ref())) }
                            td { (time(&j.updated_at)) }
                        }
                    }
                }
            }
        }
    }
}

fn job_filters(query: &BTreeMap<String, String>) -> Markup {
    let v = |name: &str| query.get(name).cloned().unwrap_or_default();
    let state = v("state");
    html! {
        form.filters method="get" action="/admin/ui/jobs" {
            label { "State"
                select name="state" {
                    option value="" selected[state.is_empty()] { "any" }
                    @for s in JobState::ALL {
                        option value=(s.as_str()) selected[state == s.as_str()] { (s.as_str()) }
                    }
                }
            }
            label { "Source" input type="text" name="source" value=(v("source")); }
            label { "Destination" input type="text" name="destination" value=(v("destination")); }
            label { "Environment" input type="text" name="environment" value=(v("environment")); }
            label { "Log ID" input type="search" name="logId" value=(v("logId")) size="38"; }
            button type="submit" { "Search" }
            a.reset href="/admin/ui/jobs" { "Clear" }
        }
    }
}

/// `GET /admin/ui/jobs`
pub async fn jobs(
    op: Operator,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let query = query_map(&req);
    let (status, body) = match job_query(&req) {
        Err(GatewayError::Invalid(issues)) => (
            StatusCode::BAD_REQUEST,
            html! {
                (job_filters(&query))
                (refused_filters(&issues))
            },
        ),
        Err(e) => return Err(ui_error(e)),
        Ok((filter, limit, offset)) => {
            let (jobs, more) = jobs_page(&state, &filter, limit, offset)
                .await
                .map_err(ui_error)?;
            (
                StatusCode::OK,
                html! {
                    (job_filters(&query))
                    (job_table(&jobs))
                    (pager("/admin/ui/jobs", req.query_string(), limit, offset, more))
                },
            )
        }
    };
    Ok(html(
        status,
        page("Jobs", Section::Jobs, Some(&op.csrf), body),
    ))
}

#[derive(Debug, Deserialize)]
pub struct JobPageQuery {
    done: Option<String>,
}

/// Files of one type in a manifest.
#[derive(Debug, Default)]
struct TypeSummary {
    files: u64,
    resources: Option<u64>,
}

/// A manifest's files by type, and how many pages it has.
struct ManifestSummary {
    output: BTreeMap<String, TypeSummary>,
    errors: BTreeMap<String, TypeSummary>,
    pages: usize,
}

/// The manifest's files by type (`output`, then `error`), with counts where the EHR gave them. No
/// URL is read out.
fn manifest_summary(job: &Job) -> Option<ManifestSummary> {
    let pages = crate::fhir::manifest::pages(job.manifest.as_deref()?).ok()?;
    let mut output: BTreeMap<String, TypeSummary> = BTreeMap::new();
    let mut errors: BTreeMap<String, TypeSummary> = BTreeMap::new();
    for page in &pages {
        for (field, into) in [("output", &mut output), ("error", &mut errors)] {
            for entry in page
                .get(field)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                let ty = entry
                    .get("type")
                    .and_then(|t| t.as_str())
                    .unwrap_or("(no type)")
                    .to_owned();
                let row = into.entry(ty).or_default();
                row.files += 1;
                if let Some(n) = entry.get("count").and_then(serde_json::Value::as_u64) {
                    row.resources = Some(row.resources.unwrap_or(0) + n);
                }
            }
        }
    }
    Some(ManifestSummary {
        output,
        errors,
        pages: pages.len(),
    })
}

fn type_table(rows: &BTreeMap<String, TypeSummary>) -> Markup {
    html! {
        table.files {
            thead { tr { th { "Type" } th.num { "Files" } th.num { "Resources" } } }
            tbody {
                @for (ty, row) in rows {
                    tr {
                        td { (ty) }
                        td.num { (row.files) }
                        td.num { @match row.resources { Some(n) => (n), None => (dash()) } }
                    }
                }
            }
        }
    }
}

/// `GET /admin/ui/jobs/{jobId}`
pub async fn job(
    op: Operator,
    path: web::Path<String>,
    query: web::Query<JobPageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, UiError> {
    let job_id = path_id(&path)?;
    let (detail, job) = job_detail(&state, job_id).await.map_err(ui_error)?;
    let retention = chrono::Duration::days(i64::from(state.settings.jobs.retention_days));
    let body = job_body(&detail, &job, retention, &op.csrf, query.done.as_deref());
    Ok(html(
        StatusCode::OK,
        page(
            &format!("Job {job_id}"),
            Section::Jobs,
            Some(&op.csrf),
            body,
        ),
    ))
}

/// One job's page; `retention` is `[jobs] retention_days`, after which a finished job is pruned.
fn job_body(
    detail: &JobDetail,
    job: &Job,
    retention: chrono::Duration,
    csrf: &str,
    done: Option<&str>,
) -> Markup {
    let j = &detail.job;
    let notice = match done {
        Some("polled") => Some("Polled the EHR; what it said is below."),
        Some("cancelled") => {
            Some("Cancelled: the export was deleted at the EHR and in the gateway.")
        }
        _ => None,
    };
    html! {
        @if let Some(n) = notice { p.notice.good role="status" { (n) } }
        dl.facts {
            dt { "State" } dd { (layout::state(&j.state)) }
            dt { "Log ID" } dd { (log_id_link(&j.log_id)) }
            dt { "Source" } dd { (j.source) }
            dt { "Destination" } dd { (j.destination) " " span.muted { (j.environment) } }
            dt { "Event type" } dd { (j.event_type) }
            dt { "Kick-off attempts" } dd { (j.attempts) }
            dt { "Last EHR status" } dd { (status(j.last_upstream_status)) }
            dt { "Progress" } dd { (j.progress.as_deref().unwrap_or("–")) }
            dt { "Next poll" } dd { (maybe_time(j.next_poll_at.as_ref())) }
            dt { "Last polled" } dd { (maybe_time(j.last_polled_at.as_ref())) }
            dt { "Failed polls in a row" } dd { (j.poll_failures) }
            dt { "Error" } dd { (j.error_code.as_deref().unwrap_or("–")) }
            dt { "Notification" } dd { (j.notify_state.as_deref().unwrap_or("–")) @if j.notify_attempts > 0 { " (" (j.notify_attempts) " attempts)" } }
            dt { "Created" } dd { (time(&j.created_at)) }
            dt { "Updated" } dd { (time(&j.updated_at)) }
            @if job.state.is_finished() {
                dt { "Kept until" } dd { (time(&(j.updated_at + retention))) " " span.muted { "([jobs] retention_days)" } }
            }
        }
        div.actions {
            @if Action::PollNow.allowed(job.state) {
                form method="post" action={ "/admin/ui/jobs/" (j.id) "/poll" } {
                    input type="hidden" name="csrf" value=(csrf);
                    button type="submit" { "Poll now" }
                }
            }
            @if Action::Cancel.allowed(job.state) {
                form method="post" action={ "/admin/ui/jobs/" (j.id) "/cancel" } {
                    input type="hidden" name="csrf" value=(csrf);
                    button.danger type="submit" { "Cancel export" }
                }
            }
        }
        @if let Some(ManifestSummary { output, errors, pages }) = manifest_summary(job) {
            h2 { @if job.state == JobState::Completed { "Manifest" } @else { "Manifest so far" } }
            p {
                (output.values().map(|t| t.files).sum::<u64>()) " files"
                @if pages > 1 { " on " (pages) " pages" }
                @if let Some(expires) = &job.expires { ". Expires " (expires) }
                "."
            }
            @if !output.is_empty() { (type_table(&output)) }
            @if !errors.is_empty() { h3 { "OperationOutcome files" } (type_table(&errors)) }
        }
        h2 { "Kick-off attempts" }
        @if detail.kickoff_attempts.is_empty() { p.empty { "None recorded." } } @else {
            table {
                thead { tr { th { "Started" } th { "Finished" } th { "Outcome" } th { "EHR" } th { "Error" } } }
                tbody {
                    @for a in &detail.kickoff_attempts {
                        tr {
                            td { (time(&a.started_at)) }
                            td { (maybe_time(a.finished_at.as_ref())) }
                            td { (a.outcome) }
                            td { (status(a.upstream_status)) }
                            td { (a.error_code.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        h2 { "Calls to the EHR" }
        @if detail.upstream_calls.is_empty() { p.empty { "None recorded." } } @else {
            table {
                thead { tr { th { "Time (UTC)" } th { "Operation" } th { "EHR" } th { "Error" } th.num { "Duration" } th { "EHR request id" } } }
                tbody {
                    @for c in &detail.upstream_calls {
                        tr {
                            td { (time(&c.time)) }
                            td { (c.route) }
                            td { (status(c.upstream_status)) }
                            td { (c.error_code.as_deref().unwrap_or("")) }
                            td.num { (millis(c.duration_ms)) }
                            td { @if let Some(id) = &c.upstream_request_id { code { (id) } } }
                        }
                    }
                }
            }
        }
    }
}

async fn act(
    req: HttpRequest,
    op: Operator,
    path: web::Path<String>,
    state: web::Data<AppState>,
    form: Option<web::Form<CsrfForm>>,
    action: Action,
) -> Result<HttpResponse, UiError> {
    check_form(&req, &state, &op, form.as_ref())?;
    let job_id = path_id(&path)?;
    operator::act(&state, job_id, action)
        .await
        .map_err(ui_error)?;
    let done = match action {
        Action::PollNow => "polled",
        Action::Cancel => "cancelled",
    };
    Ok(see_other(&format!("/admin/ui/jobs/{job_id}?done={done}")))
}

/// `POST /admin/ui/jobs/{jobId}/poll`
pub async fn poll_now(
    req: HttpRequest,
    op: Operator,
    path: web::Path<String>,
    state: web::Data<AppState>,
    form: Option<web::Form<CsrfForm>>,
) -> Result<HttpResponse, UiError> {
    act(req, op, path, state, form, Action::PollNow).await
}

/// `POST /admin/ui/jobs/{jobId}/cancel`
pub async fn cancel(
    req: HttpRequest,
    op: Operator,
    path: web::Path<String>,
    state: web::Data<AppState>,
    form: Option<web::Form<CsrfForm>>,
) -> Result<HttpResponse, UiError> {
    act(req, op, path, state, form, Action::Cancel).await
}
