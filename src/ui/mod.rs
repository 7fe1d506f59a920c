//! The operators' web dashboard under `/admin/ui/`: the message log, one message's story, the jobs
//! (with "poll now" and "cancel"), and the destinations' health. Server-rendered with maud (every value
//! escaped), usable with JavaScript off, its one stylesheet embedded in the binary, under a strict
//! Content-Security-Policy. It reads the store through the same queries as the admin API
//! (`api::admin`) and acts on jobs through `service::operator`.
//!
//! Sign-in takes the admin key (`[admin] api_key_sha256`), never a partner's credential; see
//! [`session`].

mod destinations;
mod layout;
mod pages;
pub mod session;

use crate::state::AppState;
use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::DefaultHeaders;
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use futures_util::future::LocalBoxFuture;
use session::{COOKIE_PATH, SESSION_COOKIE, Session};

/// The stylesheet, embedded.
const STYLESHEET: &str = include_str!("assets/app.css");

/// What every dashboard answer carries: nothing from elsewhere, nothing inline but markup, never in a
/// frame, never cached.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `/admin/ui`: the dashboard's routes, with its security headers.
pub fn scope() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::scope("/admin/ui")
        .wrap(
            DefaultHeaders::new()
                .add((header::CONTENT_SECURITY_POLICY, CSP))
                .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .add((header::X_FRAME_OPTIONS, "DENY"))
                .add((header::REFERRER_POLICY, "same-origin"))
                .add((header::CACHE_CONTROL, "no-store")),
        )
        .route("", web::get().to(index))
        .route("/", web::get().to(index))
        .route("/login", web::get().to(pages::login_form))
        .route("/login", web::post().to(pages::login))
        .route("/logout", web::post().to(pages::logout))
        .route("/assets/app.css", web::get().to(stylesheet))
        .route("/messages", web::get().to(pages::messages))
        .route("/messages/{log_id}", web::get().to(pages::message))
        .route("/jobs", web::get().to(pages::jobs))
        .route("/jobs/{job_id}", web::get().to(pages::job))
        .route("/jobs/{job_id}/poll", web::post().to(pages::poll_now))
        .route("/jobs/{job_id}/cancel", web::post().to(pages::cancel))
        .route("/destinations", web::get().to(destinations::show))
        .default_service(web::to(not_found))
}

/// `/admin/ui/`: the message log for a signed-in operator, else the sign-in form.
async fn index(_: Operator) -> HttpResponse {
    see_other("/admin/ui/messages")
}

async fn stylesheet() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLESHEET)
}

async fn not_found() -> HttpResponse {
    UiError::Page(StatusCode::NOT_FOUND, "There is no such page.".into()).error_response()
}

/// A 303 to `location` (a path on this gateway).
pub(crate) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

/// Why a dashboard request was not answered with its page.
#[derive(Debug)]
pub enum UiError {
    /// No valid session: to the sign-in form, then back to `next`.
    SignIn { next: String },
    /// A page that says what went wrong, with this status.
    Page(StatusCode, String),
}

impl std::fmt::Display for UiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UiError::SignIn { .. } => f.write_str("sign-in required"),
            UiError::Page(status, why) => write!(f, "{status}: {why}"),
        }
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::warn!(message = "Dashboard: the store failed.", error = %e);
        UiError::Page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The job store is unavailable; try again shortly.".into(),
        )
    }
}

impl ResponseError for UiError {
    fn status_code(&self) -> StatusCode {
        match self {
            UiError::SignIn { .. } => StatusCode::SEE_OTHER,
            UiError::Page(status, _) => *status,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            UiError::SignIn { next } => {
                let query = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", next)
                    .finish();
                see_other(&format!("/admin/ui/login?{query}"))
            }
            UiError::Page(status, why) => html(*status, layout::error_page(*status, why)),
        }
    }
}

/// A page as an HTML answer.
pub(crate) fn html(status: StatusCode, page: maud::Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .body(page.into_string())
}

/// A signed-in operator: a valid, unexpired, not signed-out session cookie for the configured admin
/// key. Anything else is sent to the sign-in form.
#[derive(Debug, Clone)]
pub struct Operator {
    pub session: Session,
    /// The CSRF token for this session's forms.
    pub csrf: String,
}

impl FromRequest for Operator {
    type Error = UiError;
    type Future = LocalBoxFuture<'static, Result<Operator, UiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let cookie = req.cookie(SESSION_COOKIE).map(|c| c.value().to_owned());
        let next = if req.method() == actix_web::http::Method::GET {
            let q = req.query_string();
            if q.is_empty() {
                req.path().to_owned()
            } else {
                format!("{}?{q}", req.path())
            }
        } else {
            "/admin/ui/messages".to_owned()
        };
        Box::pin(async move {
            let sign_in = || UiError::SignIn { next: next.clone() };
            let state = state.ok_or_else(sign_in)?;
            let admin_hash = state
                .settings
                .admin
                .api_key_sha256
                .clone()
                .ok_or_else(sign_in)?;
            let session = cookie
                .and_then(|c| {
                    state
                        .sessions
                        .verify(&admin_hash.to_ascii_lowercase(), &c, chrono::Utc::now())
                })
                .ok_or_else(sign_in)?;
            if session::signed_out(&state, &session).await? {
                return Err(sign_in());
            }
            let csrf = state.sessions.csrf(&session);
            Ok(Operator { session, csrf })
        })
    }
}

/// Whether a form post may come from this gateway's own pages: a browser's `Origin` (or, without
/// one, `Referer`) must name this host or the configured public URL's; an `Origin` that is not a URL
/// (`null`, from a sandboxed or privacy-stripped page) is refused. A post with neither header is not a
/// browser's cross-site post (browsers send `Origin` on every cross-origin POST) and passes this check;
/// the session's CSRF token and its `SameSite=Strict` cookie still guard it.
pub(crate) fn same_origin(req: &HttpRequest, state: &AppState) -> bool {
    let headers = req.headers();
    let Some(named) = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
    else {
        return true;
    };
    let Some(claimed) = named.to_str().ok().and_then(|v| url::Url::parse(v).ok()) else {
        return false;
    };
    let origin = claimed.origin();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let matches_host = host.is_some_and(|h| {
        url::Url::parse(&format!("{}://{h}", claimed.scheme())).is_ok_and(|u| u.origin() == origin)
    });
    matches_host || state.settings.server.public_url.origin() == origin
}

/// A cookie for the dashboard: `HttpOnly`, `SameSite=Strict`, on `/admin/ui`, and `Secure` when the
/// gateway's public URL is https.
pub(crate) fn cookie(
    state: &AppState,
    name: &'static str,
    value: String,
    max_age_secs: i64,
) -> Cookie<'static> {
    Cookie::build(name, value)
        .path(COOKIE_PATH)
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.settings.server.public_url.scheme() == "https")
        .max_age(actix_web::cookie::time::Duration::seconds(max_age_secs))
        .finish()
}

/// A header value, or none when it cannot be one.
pub(crate) fn header_value(v: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(v).ok()
}
