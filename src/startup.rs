//! `Application::build(settings)`: store, connectors, routes, a bound listener (port 0 in tests).

use crate::config::Settings;
use crate::connectors::http::UpstreamClient;
use crate::connectors::registry::{Registry, Secrets};
use crate::routes;
use crate::state::AppState;
use actix_web::dev::{Server, Service};
use actix_web::{App, HttpServer, web};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

/// A gateway bound to its port, ready to run.
pub struct Application {
    port: u16,
    server: Server,
    state: AppState,
    poller: Option<(
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    )>,
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
        let http = UpstreamClient::new(&settings.upstream)?;
        let registry = Registry::build(&settings, &http, Secrets::Resolve)?;
        let store = crate::jobs::open(&settings.store.url, settings.store.max_connections).await?;
        if !crate::auth::auth_required(&settings) {
            tracing::warn!(
                message = "No [[sources]] have credentials: partner routes are open to anyone who can reach them."
            );
        }
        let limits = crate::auth::RateLimits::new(&settings);
        let issuer = crate::auth_token::TokenIssuer::new(&settings)?;
        let state = AppState {
            settings: Arc::new(settings),
            registry: Arc::new(registry),
            store,
            limits: Arc::new(limits),
            issuer: Arc::new(issuer),
        };
        let port = listener.local_addr()?.port();
        let server = run(listener, state.clone())?;
        // Started here, on the main runtime: actix workers each run their own single-threaded runtime.
        let poller = state.settings.worker.enabled.then(|| {
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let poller =
                crate::worker::Poller::new(state.clone(), Arc::new(crate::worker::SystemClock));
            (stop, tokio::spawn(poller.run(stopped)))
        });
        Ok(Application {
            port,
            server,
            state,
            poller,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle to stop the server from elsewhere (signals, tests).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped (signal or handle), then stops the poller (giving back its
    /// claims) and closes the store.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let Some((stop, handle)) = self.poller {
            let _ = stop.send(true);
            let _ = handle.await;
        }
        self.state.store.close().await;
        served
    }
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
        .default_service(web::to(routes::method_not_allowed))
}

/// The partner-facing routes under `/fhir/R4/{slug}/{env}`.
pub fn fhir_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/.well-known/smart-configuration",
        web::get().to(routes::token::smart_configuration),
    )
    .service(kickoff(
        "/Group/{group_id}/$export",
        routes::kickoff::group_export,
    ))
    .service(kickoff("/Patient/$export", routes::kickoff::patient_export))
    .service(kickoff("/$export", routes::kickoff::system_export))
    .service(
        web::resource("/export-status/{job_id}")
            .route(web::get().to(routes::status::status))
            .route(web::delete().to(routes::status::delete))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/export-file/{job_id}/{file_id}")
            .route(web::get().to(routes::files::file))
            .default_service(web::to(routes::method_not_allowed)),
    )
    .service(
        web::resource("/metadata")
            .route(web::get().to(routes::capability::metadata))
            .default_service(web::to(routes::method_not_allowed)),
    );
}

fn run(listener: TcpListener, state: AppState) -> std::io::Result<Server> {
    let workers = match state.settings.server.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let header_timeout = state.settings.server.header_timeout_secs;
    let keep_alive = state.settings.server.keep_alive_secs;
    let sandbox = state
        .settings
        .sandbox_enabled()
        .then(|| web::Data::new(crate::sandbox::Sandbox::new(state.settings.sandbox.clone())));
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        let sandbox = sandbox.clone();
        App::new()
            .app_data(data.clone())
            .configure(move |cfg| {
                if let Some(sandbox) = sandbox {
                    cfg.app_data(sandbox).configure(crate::sandbox::routes);
                }
            })
            .wrap_fn(|req, srv| {
                let started = Instant::now();
                let method = req.method().clone();
                let fut = srv.call(req);
                async move {
                    let res = fut.await?;
                    // The route pattern, not the path: paths hold ids, queries may hold anything.
                    let route = res
                        .request()
                        .match_pattern()
                        .unwrap_or_else(|| "unmatched".to_owned());
                    tracing::info!(
                        message = "Request handled.",
                        method = %method,
                        route = %route,
                        status = res.status().as_u16(),
                        latency_ms = started.elapsed().as_secs_f64() * 1000.0,
                    );
                    Ok(res)
                }
            })
            .route("/healthz", web::get().to(routes::health::healthz))
            .route("/readyz", web::get().to(routes::health::readyz))
            .route("/auth/token", web::post().to(routes::token::token))
            .service(web::scope("/fhir/R4/{slug}/{env}").configure(fhir_routes))
            .default_service(web::to(routes::not_found))
    })
    .workers(workers)
    .client_request_timeout(std::time::Duration::from_secs_f64(header_timeout))
    .client_disconnect_timeout(std::time::Duration::from_secs(2))
    .keep_alive(std::time::Duration::from_secs_f64(keep_alive))
    .listen(listener)?
    .run();
    Ok(server)
}
