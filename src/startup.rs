//! `Application::build(settings)`: store, connectors, routes, a bound listener (port 0 in tests).

use crate::api;
use crate::config::Settings;
use crate::connectors::http::UpstreamClient;
use crate::connectors::registry::{Registry, Secrets};
use crate::observe::context::RequestContext;
use crate::observe::msglog::{LogRecord, MessageLog, RecordKind};
use crate::state::AppState;
use actix_web::dev::{Server, Service};
use actix_web::{App, HttpServer, web};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// A gateway bound to its port, ready to run.
pub struct Application {
    port: u16,
    server: Server,
    /// `/metrics` on `[server] metrics_listen`, when set.
    metrics: Option<(Server, u16)>,
    state: AppState,
    poller: Option<(
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    )>,
    log_task: tokio::task::JoinHandle<()>,
    retention_task: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Opens the store (running migrations), builds the connectors and binds `[server] listen`.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(&settings.server.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.server.listen))?;
        Self::build_with_listener(settings, listener).await
    }

    /// As [`Application::build`], on a listener the caller bound (tests learn the port first).
    pub async fn build_with_listener(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        // Startup owns the metrics registry and hands it to everything that counts.
        let metrics = Arc::new(crate::observe::metrics::Metrics::new());
        let http = UpstreamClient::new(&settings.upstream, metrics.clone())?;
        let registry = Registry::build(&settings, &http, Secrets::Resolve)?;
        let store = crate::store::open(&settings.store.url, settings.store.max_connections).await?;
        if !crate::auth::auth_required(&settings) {
            tracing::warn!(
                message = "No [[sources]] have credentials: partner routes are open to anyone who can reach them."
            );
        }
        for warning in settings.warnings() {
            tracing::warn!(message = "The configuration is likely wrong.", warning = %warning);
        }
        let limits = crate::auth::RateLimits::new(&settings);
        let issuer = crate::auth::issuer::TokenIssuer::new(&settings, &http)?;
        mark_unknown_kickoffs(store.as_ref(), &settings).await;
        let links = crate::service::attachments::LinkSealer::from_store(store.as_ref()).await?;
        let sessions = crate::ui::session::SessionKeys::from_store(store.as_ref()).await?;
        let (log, log_task) = MessageLog::start(store.clone(), metrics.clone());
        let retention_task = crate::service::retention::Retention {
            log_days: settings.log.retention_days,
            job_days: settings.jobs.retention_days,
        }
        .start(store.clone(), metrics.clone());
        let state = AppState {
            settings: Arc::new(settings),
            registry: Arc::new(registry),
            store,
            limits: Arc::new(limits),
            issuer: Arc::new(issuer),
            links: Arc::new(links),
            sessions: Arc::new(sessions),
            rendered: Arc::default(),
            metrics,
            log,
            http,
        };
        start_discovery(&state).await;
        let port = listener.local_addr()?.port();
        let metrics = match &state.settings.server.metrics_listen {
            Some(address) => {
                let listener = TcpListener::bind(address).map_err(|e| {
                    anyhow::anyhow!("cannot listen on {address} (server.metrics_listen): {e}")
                })?;
                let port = listener.local_addr()?.port();
                Some((run_metrics(listener, state.clone())?, port))
            }
            None => None,
        };
        let server = run(listener, state.clone())?;
        // Started here, on the main runtime: actix workers each run their own single-threaded runtime.
        let poller = state.settings.worker.enabled.then(|| {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let poller = crate::service::poller::Poller::new(
                state.clone(),
                Arc::new(crate::service::poller::SystemClock),
            );
            (stop, tokio::spawn(poller.run(stopped)))
        });
        Ok(Application {
            port,
            server,
            metrics,
            state,
            poller,
            log_task,
            retention_task,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The port `/metrics` is served on when `[server] metrics_listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(_, port)| *port)
    }

    /// A handle to stop the server from elsewhere (signals, tests).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (SIGTERM, SIGINT or a handle). Stopping is graceful: no new
    /// connections, in-flight requests and streamed downloads get `[server] shutdown_grace_secs` to
    /// finish; then the poller stops (giving back its claims), the message log is flushed and the
    /// store closed.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let signals = tokio::spawn(async move {
            let why = stop_signal().await;
            tracing::info!(
                message = "Stopping: no new connections; in-flight requests may finish.",
                signal = why
            );
            handle.stop(true).await;
        });
        let metrics = self.metrics.map(|(server, _)| {
            let handle = server.handle();
            (handle, tokio::spawn(server))
        });
        let served = self.server.await;
        signals.abort();
        if let Some((handle, task)) = metrics {
            handle.stop(false).await;
            let _ = task.await;
        }
        if let Some((stop, handle)) = self.poller {
            let _ = stop.send(true);
            let _ = handle.await;
        }
        self.state.log.flush().await;
        self.log_task.abort();
        self.retention_task.abort();
        self.state.store.close().await;
        tracing::info!(message = "Stopped.");
        served
    }
}

/// Waits for SIGTERM or SIGINT (Ctrl-C); both stop the gateway gracefully.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

/// Longest the boot waits for the first discovery round.
const FIRST_DISCOVERY_WAIT: Duration = Duration::from_secs(3);

/// Discovery: a task per connector with `discover = true`, reading the EHR's declarations at start and
/// every `discover_interval_secs`. The boot waits at most [`FIRST_DISCOVERY_WAIT`] for the first
/// round, so a reachable EHR's declarations hold from the first request while an unreachable one
/// never holds the boot up (its profile table stands until discovery succeeds).
async fn start_discovery(state: &AppState) {
    let mut first_rounds = Vec::new();
    for connector in state.registry.all().filter(|c| c.discovers()) {
        let connector = connector.clone();
        let (done, first) = tokio::sync::oneshot::channel();
        first_rounds.push(first);
        tokio::spawn(async move {
            let mut done = Some(done);
            loop {
                connector.refresh_discovery().await;
                if let Some(done) = done.take() {
                    let _ = done.send(());
                }
                tokio::time::sleep(connector.discover_interval).await;
            }
        });
    }
    let _ = tokio::time::timeout(
        FIRST_DISCOVERY_WAIT,
        futures_util::future::join_all(first_rounds),
    )
    .await;
}

/// A kick-off resource: GET and POST to `handler`, 405 for anything else.
fn kickoff<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args> + Clone,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler.clone()))
        .route(web::post().to(handler))
        .default_service(web::to(api::method_not_allowed))
}

/// The partner-facing routes under `/fhir/R4/{slug}/{env}`.
pub fn fhir_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/.well-known/smart-configuration",
        web::get().to(api::token::smart_configuration),
    )
    .service(kickoff(
        "/Group/{group_id}/$export",
        api::kickoff::group_export,
    ))
    .service(kickoff("/Patient/$export", api::kickoff::patient_export))
    .service(kickoff("/$export", api::kickoff::system_export))
    .service(
        web::resource("/export-status/{job_id}")
            .route(web::get().to(api::status::status))
            .route(web::delete().to(api::status::delete))
            .default_service(web::to(api::method_not_allowed)),
    )
    .service(
        web::resource("/export-manifest/{job_id}/{page}")
            .route(web::get().to(api::status::page))
            .default_service(web::to(api::method_not_allowed)),
    )
    .service(
        web::resource("/export-attachment/{job_id}/{link:.*}")
            .route(web::get().to(api::files::attachment))
            .default_service(web::to(api::method_not_allowed)),
    )
    .service(
        web::resource("/export-file/{job_id}/{file_id}")
            .route(web::get().to(api::files::file))
            .default_service(web::to(api::method_not_allowed)),
    )
    .service(
        web::resource("/metadata")
            .route(web::get().to(api::capability::metadata))
            .default_service(web::to(api::method_not_allowed)),
    );
}

fn run(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
    let workers = match state.settings.server.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let header_timeout = Duration::from_secs_f64(state.settings.server.header_timeout_secs);
    let keep_alive = Duration::from_secs_f64(state.settings.server.keep_alive_secs);
    let grace_secs = state.settings.server.shutdown_grace_secs.ceil() as u64;
    let separate_metrics = state.settings.server.metrics_listen.is_some();
    let max_connections = state
        .settings
        .server
        .max_connections
        .unwrap_or_else(crate::front::default_max_connections);
    let front = crate::front::FrontDoor::new(max_connections, header_timeout);
    let local = listener.local_addr()?;
    let sandbox = state
        .settings
        .sandbox_enabled()
        .then(|| web::Data::new(crate::sandbox::Sandbox::new(state.settings.sandbox.clone())));
    let data = web::Data::new(state);
    let builder = actix_server::Server::build();
    let shutdown = builder.graceful_shutdown_signal();
    let builder = builder
        .workers(workers)
        .shutdown_timeout(grace_secs)
        // Signals are handled in `run_until_stopped`, so SIGINT is as graceful as SIGTERM.
        .disable_signals()
        .listen("fhirgate", listener, move || {
            let sandbox = sandbox.clone();
            let app = App::new()
                .app_data(data.clone())
                .app_data(api::path_config())
                .configure(move |cfg| {
                    if let Some(sandbox) = sandbox {
                        cfg.app_data(sandbox).configure(crate::sandbox::routes);
                    }
                })
                .wrap_fn(observe_request)
                .route("/healthz", web::get().to(api::health::healthz))
                .route("/readyz", web::get().to(api::health::readyz))
                .configure(move |cfg| {
                    if !separate_metrics {
                        cfg.route("/metrics", web::get().to(api::health::metrics));
                    }
                })
                .route("/openapi.json", web::get().to(api::openapi::serve_document))
                .service(crate::ui::scope())
                .service(
                    web::scope("/admin")
                        .route("/logs", web::get().to(api::admin::logs))
                        .route("/logs/{log_id}", web::get().to(api::admin::log))
                        .route("/jobs", web::get().to(api::admin::jobs))
                        .route("/jobs/{job_id}", web::get().to(api::admin::job)),
                )
                .route("/auth/token", web::post().to(api::token::token))
                .service(web::scope("/fhir/R4/{slug}/{env}").configure(fhir_routes))
                .default_service(web::to(api::not_found));
            let shutdown = shutdown.clone();
            let http = actix_http::HttpService::build()
                .graceful_shutdown_signal(move || {
                    let signal = shutdown.clone();
                    async move { signal.notified().await }
                })
                .keep_alive(keep_alive)
                .client_request_timeout(header_timeout)
                .client_disconnect_timeout(Duration::from_secs(2))
                .local_addr(local)
                .finish(map_config(
                    app.into_factory()
                        .map_err(|err: actix_web::Error| err.error_response()),
                    |_| actix_web::dev::AppConfig::default(),
                ))
                .map_err(|_| ());
            // Every connection passes the front door first (see `front`).
            let front = front.clone();
            fn_service(move |io: tokio::net::TcpStream| {
                let admitted = front.admit(io);
                async move {
                    match admitted {
                        Some(io) => {
                            let peer = io.peer_addr();
                            Ok((io, actix_http::Protocol::Http1, peer))
                        }
                        None => Err(()),
                    }
                }
            })
            .and_then(http)
        })?;
    Ok(builder.run())
}

/// `/metrics` alone, on `[server] metrics_listen` (an address only the monitoring network reaches).
fn run_metrics(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    let data = web::Data::new(state);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/metrics", web::get().to(api::health::metrics))
            .default_service(web::to(api::not_found))
    })
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

/// Kick-offs reserved by a gateway that died while the EHR was answering are marked `kickoff-unknown`
/// at start, so nothing sends them again unasked. The embedded SQLite store belongs to this one process,
/// so every reservation in it is a dead one; on PostgreSQL other replicas may be mid-call, so only
/// reservations older than `[jobs] pending_stale_secs` are.
async fn mark_unknown_kickoffs(store: &dyn crate::store::JobStore, settings: &Settings) {
    let now = chrono::Utc::now();
    let before = if settings.store.url.starts_with("sqlite:") {
        now
    } else {
        now - chrono::Duration::seconds(settings.jobs.pending_stale_secs as i64)
    };
    match store.mark_unknown_kickoffs(before).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            message = "Kick-offs whose outcome is unknown (the gateway stopped while the EHR was answering) marked kickoff-unknown.",
            jobs = n
        ),
        Err(e) => tracing::warn!(message = "Could not mark unknown kick-offs.", error = %e),
    }
}

/// Routes whose requests go to the message log: the partner-facing ones.
fn logged(path: &str) -> bool {
    path.starts_with("/fhir/") || path == "/auth/token"
}

/// The event type of a partner request, from its method and path.
fn event_type(method: &actix_web::http::Method, path: &str) -> &'static str {
    let last = path.rsplit('/').next().unwrap_or_default();
    if path == "/auth/token" {
        "token"
    } else if last == "$export" {
        if path.contains("/Group/") {
            "group-export"
        } else if path.ends_with("/Patient/$export") {
            "patient-export"
        } else {
            "system-export"
        }
    } else if path.contains("/export-status/") {
        if method == actix_web::http::Method::DELETE {
            "export-delete"
        } else {
            "status-check"
        }
    } else if path.contains("/export-manifest/") {
        "manifest-page"
    } else if path.contains("/export-file/") {
        "file-download"
    } else if path.contains("/export-attachment/") {
        "attachment-download"
    } else if last == "metadata" {
        "capability"
    } else if last == "smart-configuration" {
        "discovery"
    } else {
        "other"
    }
}

/// The Log ID a request starts with: the partner's `X-Request-ID` when it is a UUID, else a new one.
/// A kick-off envelope's `Meta.Logs[0].ID`, or the job's Log ID for status, files and delete, replace it.
fn initial_log_id(req: &actix_web::dev::ServiceRequest) -> uuid::Uuid {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v.trim()).ok())
        // Time-ordered (v7), as every id the gateway mints for the store: the indexes on them then
        // grow at one end, and a group commit writes a few pages rather than one per row.
        .unwrap_or_else(uuid::Uuid::now_v7)
}

/// The one middleware: a span and a context per request, then metrics, the message log, the
/// `X-Request-ID` answer header and the request's closing log line.
fn observe_request<S>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse, actix_web::Error>> + use<S>
where
    S: Service<
            actix_web::dev::ServiceRequest,
            Response = actix_web::dev::ServiceResponse,
            Error = actix_web::Error,
        >,
{
    let started = Instant::now();
    let at = chrono::Utc::now();
    let method = req.method().clone();
    let path = req.path().to_owned();
    let logged = logged(&path);
    let event = event_type(&method, &path);
    let span = tracing::info_span!(
        "request",
        log_id = tracing::field::Empty,
        attempt_id = tracing::field::Empty,
        job_id = tracing::field::Empty,
        source = tracing::field::Empty,
        destination = tracing::field::Empty,
        environment = tracing::field::Empty,
    );
    let ctx = RequestContext::new(initial_log_id(&req), uuid::Uuid::now_v7(), span.clone());
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let fut = srv.call(req);
    async move {
        let scoped = ctx.clone();
        let result = scoped
            .scope(async move {
                crate::observe::context::set_event_type(event);
                fut.await
            })
            .instrument(span.clone())
            .await;
        let mut res = result?;
        // The route pattern, not the path: paths hold ids, queries may hold anything.
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        let status = res.status().as_u16();
        let elapsed = started.elapsed();
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let fields = ctx.snapshot();
        if !res.headers().contains_key("x-request-id")
            && let Ok(v) =
                actix_web::http::header::HeaderValue::from_str(&fields.log_id.to_string())
        {
            res.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("x-request-id"),
                v,
            );
        }
        if let Some(state) = &state {
            state
                .metrics
                .inbound(&route, method.as_str(), status, elapsed.as_secs_f64());
            if logged && route != "unmatched" {
                let info = res.request().match_info();
                let raw = |name: &str| info.get(name).map(crate::domain::shorten);
                state.log.record(LogRecord {
                    kind: RecordKind::Request,
                    log_id: fields.log_id,
                    attempt_id: fields.attempt_id,
                    time: at,
                    source: fields.source.clone(),
                    destination: fields.destination.clone().or_else(|| raw("slug")),
                    environment: fields.environment.clone().or_else(|| raw("env")),
                    event_type: Some(event.to_owned()),
                    method: Some(method.as_str().to_owned()),
                    route: route.clone(),
                    gateway_status: Some(status),
                    upstream_status: fields.upstream_status,
                    error_code: fields.error_code.clone(),
                    duration_ms: latency_ms,
                    job_id: fields.job_id,
                    upstream_request_id: None,
                    seq: 0,
                });
                for call in fields.upstream {
                    state.log.record(call);
                }
            }
        }
        span.in_scope(|| {
            tracing::info!(
                message = "Request handled.",
                method = %method,
                route = %route,
                status,
                latency_ms,
            );
        });
        Ok(res)
    }
}
