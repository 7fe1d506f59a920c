//! Spawning the gateway on port 0 against a wiremock upstream, and reading what it answers.

mod admin;
mod binary;
mod dashboard;
mod export;
mod tokens;
pub use admin::*;
pub use binary::*;
pub use dashboard::*;
pub use export::*;
pub use tokens::*;

use fhirgate::config::Settings;
use fhirgate::startup::Application;
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tempfile::TempDir;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The token every test destination presents upstream.
pub const UPSTREAM_TOKEN: &str = "canary-upstream-token-5f2c";
/// The partner-facing base URL in every test, so snapshots do not carry ports.
pub const PUBLIC_URL: &str = "https://gateway.example";
/// The Log ID of the seed 000 example.
pub const SEED_LOG_ID: &str = "d9f5d293-7110-461e-a875-3beb089e79f3";
/// The seed envelope's `Meta.Logs[0].AttemptID`.
pub const SEED_ATTEMPT_ID: &str = "925d1617-2fe0-468c-a14c-f8c04b572c54";

/// A running gateway, its upstream, and its storage.
pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:{port}` of `/metrics` when `[server] metrics_listen` is set.
    pub metrics_address: Option<String>,
    pub upstream: Arc<MockServer>,
    pub client: reqwest::Client,
    pub settings: Settings,
    handle: actix_web::dev::ServerHandle,
    state: fhirgate::state::AppState,
    _dir: Arc<Scratch>,
}

/// A test's files, and its PostgreSQL database when it has one: both go when the last gateway of the
/// test does (hundreds of test databases were left behind otherwise).
pub struct Scratch {
    dir: TempDir,
    database: Mutex<Option<(String, String)>>,
}

impl Scratch {
    fn new() -> Arc<Scratch> {
        Arc::new(Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
            database: Mutex::new(None),
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The job store for this test: a fresh PostgreSQL database when `FHIRGATE_TEST_POSTGRES_URL` is
    /// set (dropped with this), otherwise a SQLite file here.
    async fn store_url(&self) -> String {
        let admin = match std::env::var("FHIRGATE_TEST_POSTGRES_URL") {
            Ok(admin) if !admin.is_empty() => admin,
            _ => return format!("sqlite://{}", self.path().join("jobs.db").display()),
        };
        let name = test_databases::create(&admin).await;
        let mut url = url::Url::parse(&admin).expect("FHIRGATE_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        *self.database.lock().unwrap() = Some((admin, name));
        url.to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let Some((admin, name)) = self.database.lock().unwrap().take() else {
            return;
        };
        // On a thread of its own: the test's runtime may be the one being dropped.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(test_databases::drop(&admin, &name));
        });
        let _ = dropped.join();
    }
}

/// The tests' PostgreSQL databases: each named `fhirgate_test_{unix seconds}_{random}`, dropped by
/// its test, and, should a test process be killed before that (a timeout, `kill -9`, a cancelled
/// run), dropped by a later test once it is a quarter of an hour old.
pub mod test_databases {
    use sqlx::Connection;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    const PREFIX: &str = "fhirgate_test_";
    /// Far longer than any test takes: a database this old belongs to a test process that is gone.
    const STALE_AFTER: Duration = Duration::from_secs(15 * 60);

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    /// When the database `name` was made, for a name of this module's making.
    pub fn created_at(name: &str) -> Option<u64> {
        name.strip_prefix(PREFIX)?.split_once('_')?.0.parse().ok()
    }

    /// A new, empty database; stale ones go first.
    pub async fn create(admin: &str) -> String {
        let now = now();
        let name = format!("{PREFIX}{now}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .expect("connect to the test PostgreSQL");
        let existing: Vec<String> =
            sqlx::query_scalar("SELECT datname FROM pg_database WHERE starts_with(datname, $1)")
                .bind(PREFIX)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default();
        for stale in existing.iter().filter(|old| {
            created_at(old).is_some_and(|at| now.saturating_sub(at) > STALE_AFTER.as_secs())
        }) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {stale} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        name
    }

    /// Drops `name`, its connections with it, trying again for a few seconds (the server may be
    /// refusing connections while many tests end at once); says so on stderr if it could not.
    pub async fn drop(admin: &str, name: &str) {
        let mut last = String::new();
        for attempt in 1..=10u64 {
            let dropped = async {
                let mut conn = sqlx::PgConnection::connect(admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            };
            match dropped.await {
                Ok(()) => return,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
        }
        eprintln!("the test database {name} was left behind: {last}");
    }
}

/// The test configuration: one destination per vendor profile, all on the same mock upstream.
pub fn test_config(upstream: &str, dir: &Path) -> String {
    test_config_with_store(
        upstream,
        dir,
        &format!("sqlite://{}", dir.join("jobs.db").display()),
        "",
    )
}

/// The test configuration with a given store URL and extra TOML appended.
pub fn test_config_with_store(upstream: &str, dir: &Path, store: &str, extra: &str) -> String {
    // `@UPSTREAM@` in the extra TOML stands for the mock upstream's base URL.
    let extra = extra.replace("@UPSTREAM@", upstream);
    let token = dir.join("upstream-token");
    std::fs::write(&token, UPSTREAM_TOKEN).expect("write token file");
    let token = token.display();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_url = "{PUBLIC_URL}"

[store]
url = "{store}"

[upstream]
connect_timeout_secs = 1.0
request_timeout_secs = 2.0

[[destinations]]
slug = "spec-ehr"
id = "af394f14-b34a-464f-8d24-895f370af4c9"
name = "Spec-conformant EHR"
vendor = "bulk-data"
[destinations.environments.Development]
base_url = "{upstream}/fhir/r4"
auth = {{ type = "bearer", token_file = "{token}" }}
file_hosts = ["localhost"]
allow_private_addresses = true

[[destinations]]
slug = "oracle"
name = "Oracle Health tenant"
vendor = "oracle-health"
[destinations.environments.Production]
base_url = "{upstream}/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d"
auth = {{ type = "bearer", token_file = "{token}" }}
allow_private_addresses = true

[[destinations]]
slug = "narrow-oracle"
name = "Oracle Health tenant without includeAssociatedData"
vendor = "oracle-health"
[destinations.environments.Development]
base_url = "{upstream}/r4/narrow"
supported_parameters = ["_type"]
allow_private_addresses = true

[[destinations]]
slug = "netsmart"
name = "Netsmart"
vendor = "netsmart"
[destinations.environments.Staging]
base_url = "{upstream}/uscore/v1/bulk-data"
auth = {{ type = "bearer", token_file = "{token}" }}
allow_private_addresses = true

[[destinations]]
slug = "nowhere"
name = "An EHR that refuses connections"
vendor = "bulk-data"
[destinations.environments.Development]
base_url = "http://127.0.0.1:9/fhir"
allow_private_addresses = true

[[destinations]]
slug = "strict-ehr"
name = "An EHR whose files may not come from private addresses"
vendor = "bulk-data"
[destinations.environments.Development]
base_url = "{upstream}/fhir/r4"
auth = {{ type = "bearer", token_file = "{token}" }}
{extra}
"#,
    )
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with("").await
    }

    /// A gateway whose configuration has `extra` TOML appended, then is changed by `change`.
    pub async fn spawn_configured(extra: &str, change: impl FnOnce(&mut Settings)) -> TestApp {
        let upstream = Arc::new(MockServer::start().await);
        let dir = Scratch::new();
        let store = dir.store_url().await;
        let text = test_config_with_store(&upstream.uri(), dir.path(), &store, extra);
        let mut settings = Settings::from_toml(&text).expect("test config");
        change(&mut settings);
        Self::start(upstream, settings, dir).await
    }

    /// A gateway whose configuration has `extra` TOML appended (after the last destination).
    pub async fn spawn_with(extra: &str) -> TestApp {
        Self::spawn_configured(extra, |_| {}).await
    }

    /// This gateway stopped and started again with other settings, on the same store and upstream.
    pub async fn with_settings(self, settings: Settings) -> TestApp {
        self.handle.stop(true).await;
        self.state.store.close().await;
        Self::start(self.upstream, settings, self._dir).await
    }

    /// This gateway stopped at once, as a crash would (requests in flight are dropped, nothing is
    /// recorded for them), then started again with `settings` on the same store and upstream.
    pub async fn crash_and_restart(self, settings: Settings) -> TestApp {
        self.handle.stop(false).await;
        self.state.store.close().await;
        Self::start(self.upstream, settings, self._dir).await
    }

    /// A second gateway process on the same store and upstream (another replica).
    pub async fn replica(&self) -> TestApp {
        Self::start(
            self.upstream.clone(),
            self.settings.clone(),
            self._dir.clone(),
        )
        .await
    }

    /// A gateway whose only destination is its own sandbox EHR (switches as `sandbox_toml` says).
    pub async fn spawn_sandbox(sandbox_toml: &str) -> TestApp {
        let upstream = Arc::new(MockServer::start().await);
        let dir = Scratch::new();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let port = listener.local_addr().expect("port").port();
        let token = dir.path().join("sandbox-token");
        std::fs::write(&token, UPSTREAM_TOKEN).expect("token file");
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
public_url = "{PUBLIC_URL}"
[store]
url = "{store}"
{sandbox_toml}
[[destinations]]
slug = "sandbox"
name = "Sandbox EHR"
vendor = "sandbox"
[destinations.environments.Development]
base_url = "http://127.0.0.1:{port}/sandbox/r4"
auth = {{ type = "bearer", token_file = "{token}" }}
file_hosts = ["localhost"]
allow_private_addresses = true
"#,
            store = dir.store_url().await,
            token = token.display(),
        );
        let settings = Settings::from_toml(&text).expect("sandbox config");
        Self::start_on(listener, upstream, settings, dir).await
    }

    async fn start(upstream: Arc<MockServer>, settings: Settings, dir: Arc<Scratch>) -> TestApp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        Self::start_on(listener, upstream, settings, dir).await
    }

    async fn start_on(
        listener: TcpListener,
        upstream: Arc<MockServer>,
        settings: Settings,
        dir: Arc<Scratch>,
    ) -> TestApp {
        let app = Application::build_with_listener(settings.clone(), listener)
            .await
            .expect("the gateway builds");
        let address = format!("http://127.0.0.1:{}", app.port());
        let metrics_address = app
            .metrics_port()
            .map(|port| format!("http://127.0.0.1:{port}"));
        let handle = app.handle();
        let state = app.state().clone();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            address,
            metrics_address,
            upstream,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            settings,
            handle,
            state,
            _dir: dir,
        }
    }

    /// Stops the gateway and starts a new process-equivalent on the same store and upstream.
    pub async fn restart(self) -> TestApp {
        self.handle.stop(true).await;
        self.state.store.close().await;
        Self::start(self.upstream, self.settings, self._dir).await
    }

    pub fn state(&self) -> &fhirgate::state::AppState {
        &self.state
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POSTs an envelope to a kick-off route.
    /// `GET url` with no credentials (`url` is a full URL: `app.url(…)` or a gateway URL made local).
    pub async fn get(&self, url: impl reqwest::IntoUrl) -> reqwest::Response {
        self.client
            .get(url)
            .send()
            .await
            .expect("the gateway answers")
    }

    /// `GET url` with a bearer credential.
    pub async fn get_as(&self, credential: &str, url: impl reqwest::IntoUrl) -> reqwest::Response {
        self.client
            .get(url)
            .bearer_auth(credential)
            .send()
            .await
            .expect("the gateway answers")
    }

    /// Mounts a plain `GET path` answer on the mock upstream.
    pub async fn upstream_get(&self, path: &str, template: ResponseTemplate) {
        Mock::given(method("GET"))
            .and(wiremock::matchers::path(path))
            .respond_with(template)
            .mount(&self.upstream)
            .await;
    }

    /// Posts an envelope to `path` with a bearer credential.
    pub async fn post_envelope_as(
        &self,
        credential: &str,
        path: &str,
        body: &Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(credential)
            .json(body)
            .send()
            .await
            .expect("the gateway answers")
    }

    pub async fn post_envelope(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// POSTs raw bytes with a content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// The upstream answers every `$export` kick-off with 202 and a status URL.
    pub async fn upstream_accepts_kickoffs(&self) {
        Mock::given(path_regex(r"\$export$"))
            .respond_with(ResponseTemplate::new(202).insert_header(
                "Content-Location",
                format!("{}/bulk-export/jobs/upstream-job-1", self.upstream.uri()),
            ))
            .mount(&self.upstream)
            .await;
    }

    /// Requests the upstream received.
    pub async fn upstream_requests(&self) -> Vec<wiremock::Request> {
        self.upstream.received_requests().await.unwrap_or_default()
    }

    /// Requests the upstream received for `$export`.
    pub async fn upstream_kickoffs(&self) -> Vec<wiremock::Request> {
        self.upstream_requests()
            .await
            .into_iter()
            .filter(|r| r.url.path().ends_with("$export"))
            .collect()
    }
}

/// Mounts a kick-off mock that must be called exactly `n` times.
pub async fn expect_kickoffs(app: &TestApp, n: u64) {
    Mock::given(method("GET"))
        .and(path_regex(r"\$export$"))
        .respond_with(ResponseTemplate::new(202).insert_header(
            "Content-Location",
            format!("{}/bulk-export/jobs/upstream-job-1", app.upstream.uri()),
        ))
        .expect(n)
        .mount(&app.upstream)
        .await;
}

/// The repository's root (fixtures, schemas).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture file, parsed.
pub fn fixture(rel: &str) -> Value {
    let text = std::fs::read_to_string(repo().join("fixtures").join(rel)).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The seed 000 example envelope.
pub fn seed() -> Value {
    fixture("envelopes/group-export/valid/seed-000-example.json")
}

/// The group export route of a destination.
pub fn group_route(slug: &str, env: &str, group: &str) -> String {
    format!("/fhir/R4/{slug}/{env}/Group/{group}/$export")
}

/// The seed group route on the spec-conformant destination.
pub fn spec_group_route() -> String {
    group_route("spec-ehr", "Development", "example-group-id")
}

/// The response body as JSON.
pub async fn json_body(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text}"))
}

/// The `expression`s named by an OperationOutcome's issues.
pub fn expressions(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .map(|issues| {
            issues
                .iter()
                .flat_map(|i| i["expression"].as_array().cloned().unwrap_or_default())
                .filter_map(|e| e.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The `code`s of an OperationOutcome's issues.
pub fn codes(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .map(|issues| {
            issues
                .iter()
                .filter_map(|i| i["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Replaces what changes on every run (times, minted ids) so an envelope can be snapshotted.
pub fn redact_envelope(mut v: Value) -> Value {
    if let Some(meta) = v.get_mut("Meta") {
        if meta.get("EventDateTime").is_some_and(Value::is_string) {
            meta["EventDateTime"] = Value::String("[now]".into());
        }
        if let Some(logs) = meta.get_mut("Logs").and_then(Value::as_array_mut) {
            for log in logs {
                // The seed's own AttemptID is echoed, and shown; one the gateway minted is redacted.
                if log["AttemptID"].as_str() != Some(SEED_ATTEMPT_ID) {
                    log["AttemptID"] = Value::String("[new-attempt-id]".into());
                }
                if log["ID"].as_str() != Some(SEED_LOG_ID) {
                    log["ID"] = Value::String("[new-log-id]".into());
                }
            }
        }
    }
    if let Some(loc) = v.get("contentLocation").and_then(Value::as_str) {
        v["contentLocation"] = Value::String(redact_job_url(loc));
    }
    v
}

/// `…/export-status/{uuid}` → `…/export-status/[job-id]`.
pub fn redact_job_url(url: &str) -> String {
    match url.rsplit_once('/') {
        Some((head, tail)) if uuid::Uuid::parse_str(tail).is_ok() => format!("{head}/[job-id]"),
        _ => url.to_owned(),
    }
}

/// A TCP proxy that can cut every connection and refuse new ones, then let them through again: a
/// store (or any server) going away and coming back, without touching the server.
pub struct TcpProxy {
    port: u16,
    open: Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl TcpProxy {
    pub async fn start(target: &str) -> TcpProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (accepting, target, cuts) = (open.clone(), target.to_owned(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = target.clone();
                let mut cut = cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        TcpProxy { port, open, cut }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Drops every connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
