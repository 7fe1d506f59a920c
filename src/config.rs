//! Settings: a TOML file (or the embedded default) → `FHIRGATE__SECTION__KEY` overrides → checks.
//! Invalid settings stop the boot with a message naming the key.

pub use crate::domain::Vendor;
use crate::domain::secret::Secret;
use crate::domain::{DestinationSlug, EnvironmentFlag, Param};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use url::Url;
use uuid::Uuid;
use validator::Validate;

/// The example configuration, which is also the built-in default.
pub const EMBEDDED_DEFAULT: &str = include_str!("../config/fhirgate.example.toml");

/// Everything the gateway reads at boot.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    #[validate(nested)]
    pub server: ServerSettings,
    #[serde(default)]
    #[validate(nested)]
    pub store: StoreSettings,
    #[serde(default)]
    #[validate(nested)]
    pub upstream: UpstreamSettings,
    #[serde(default)]
    #[validate(nested)]
    pub log: LogSettings,
    #[serde(default)]
    pub admin: AdminSettings,
    #[serde(default)]
    #[validate(nested)]
    pub jobs: JobSettings,
    #[serde(default)]
    #[validate(nested)]
    pub worker: WorkerSettings,
    #[serde(default)]
    #[validate(nested)]
    pub sandbox: SandboxSettings,
    #[serde(default)]
    #[validate(nested)]
    pub sources: Vec<SourceSettings>,
    #[serde(default)]
    #[validate(nested)]
    pub auth: AuthTokenSettings,
    #[serde(default)]
    #[validate(nested)]
    pub destinations: Vec<DestinationSettings>,
}

/// `[jobs]`: how the gateway answers status polls.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Seconds to wait between upstream polls when the EHR gives no Retry-After; partners polling
    /// sooner get the stored answer.
    #[serde(default = "default_poll_interval")]
    #[validate(range(min = 1, max = 86_400))]
    pub poll_interval_secs: u64,
    /// Seconds a kick-off may stay in flight (reserved, EHR not yet answered) before the gateway takes
    /// it that its process died mid-call: the job is then marked `kickoff-unknown`, never re-sent on its
    /// own. Keep it above `[upstream] timeout_secs`.
    #[serde(default = "default_pending_stale")]
    #[validate(range(min = 1, max = 86_400))]
    pub pending_stale_secs: u64,
    /// Longest wait adopted from an EHR's `Retry-After` (at kick-off, status and the poller); longer
    /// ones are cut to it, and the partner sees the cut value.
    #[serde(default = "default_max_retry_after")]
    #[validate(range(min = 1, max = 86_400))]
    pub max_retry_after_secs: u64,
    /// Days a finished job (failed, completed, export-failed, expired or deleted) is kept after its
    /// last change; then the gateway deletes it and its attempts, and its status URL answers 404.
    /// Jobs still in flight and `kickoff-unknown` ones are never pruned.
    #[serde(default = "default_retention_days")]
    #[validate(range(min = 1, max = 3650))]
    pub retention_days: u32,
}

/// `[worker]`: the optional background poller.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct WorkerSettings {
    /// Poll in-progress jobs in the background and notify sources when they finish.
    #[serde(default)]
    pub enabled: bool,
    /// Seconds between looks for due jobs.
    #[serde(default = "default_tick")]
    #[validate(range(min = 0.01, max = 3600.0))]
    pub tick_secs: f64,
    /// Seconds a claim on a job lasts; a crashed poller's jobs are picked up after it.
    #[serde(default = "default_claim_ttl")]
    #[validate(range(min = 1, max = 86_400))]
    pub claim_ttl_secs: u64,
    /// Jobs claimed per look. A look that finds a full batch looks again at once (the poller drains a
    /// backlog at the speed the EHRs answer, `concurrency` polls in flight), else it waits `tick_secs`.
    #[serde(default = "default_batch")]
    #[validate(range(min = 1, max = 1000))]
    pub batch: u32,
    /// Longest wait between polls of one job when backing off.
    #[serde(default = "default_max_backoff")]
    #[validate(range(min = 1, max = 86_400))]
    pub max_backoff_secs: u64,
    /// Notification deliveries tried before giving up.
    #[serde(default = "default_notify_attempts")]
    #[validate(range(min = 1, max = 100))]
    pub notify_max_attempts: u32,
    /// Failed polls in a row (EHR errors, unusable answers) after which a job fails with
    /// `upstream-poll-failed`.
    #[serde(default = "default_max_poll_failures")]
    #[validate(range(min = 1, max = 1000))]
    pub max_poll_failures: u32,
    /// Upstream polls in flight at once per replica (each destination's kick-off cap still applies).
    #[serde(default = "default_concurrency")]
    #[validate(range(min = 1, max = 1024))]
    pub concurrency: u32,
}

/// `[sandbox]`: the simulated EHR served under `/sandbox/r4` when a destination uses `vendor = "sandbox"`.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    /// Seconds an export stays in progress before its manifest is ready.
    #[serde(default = "default_progress")]
    #[validate(range(min = 0.0, max = 3600.0))]
    pub progress_secs: f64,
    /// The Retry-After the sandbox sends while an export is in progress.
    #[serde(default = "default_sandbox_retry_after")]
    #[validate(range(max = 3600))]
    pub retry_after_secs: u64,
    /// Answer file requests with a 307 to a separate file host that refuses Authorization (Oracle Health).
    #[serde(default = "default_true")]
    pub redirect_files: bool,
    /// Host name of the simulated file host (another origin than the FHIR base's host).
    #[serde(default = "default_file_host")]
    pub file_host: String,
    /// Answer 429 to a second export of a client while its first is in progress (Oracle Health).
    #[serde(default)]
    pub one_export_per_client: bool,
}

/// `[[sources]]`: a partner app.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// The source id (Redox `Meta.Source.ID`).
    pub id: Uuid,
    /// A name for people.
    #[validate(length(min = 1, max = 128))]
    pub name: String,
    /// Where the background poller POSTs a `status-check-response` when a job completes or fails.
    pub notify_url: Option<Url>,
    /// SHA-256 (hex) of the source's API key, sent as `Authorization: Bearer <key>`. The key itself is
    /// never in the configuration.
    pub api_key_sha256: Option<String>,
    /// What the source may reach: `"slug"` (every environment), `"slug:Environment"`, or
    /// `{ slug = "…", environments = ["Production", …] }`.
    #[serde(default)]
    pub destinations: Vec<Grant>,
    /// Requests a minute this source may make (0: no limit).
    #[serde(default)]
    pub rate_limit_per_minute: u32,
    /// The source's public keys (a JWKS), for client assertions at `POST /auth/token`.
    pub jwks_file: Option<PathBuf>,
    /// Where the source publishes its JWKS (fetched when a `kid` is not yet known). An assertion whose
    /// header carries `jku` is accepted only when `jku` is exactly this URL.
    pub jwks_url: Option<Url>,
    /// The SMART system scopes this source may be granted (v1 `system/Patient.read` or v2
    /// `system/Patient.rs`; `*` for every type). Only read and search are ever granted.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<crate::domain::SystemScope>,
}

fn default_scopes() -> Vec<crate::domain::SystemScope> {
    crate::domain::Scopes::all_read().iter().copied().collect()
}

impl SourceSettings {
    /// The scopes this source may be granted.
    pub fn allowed_scopes(&self) -> crate::domain::Scopes {
        crate::domain::Scopes::new(self.scopes.clone())
    }
}

/// One destination (and optionally some of its environments) granted to a source.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Grant {
    /// `"slug"` or `"slug:Environment"`.
    Short(String),
    /// `{ slug = "…", environments = [...] }`; no `environments` means all of them.
    Table {
        slug: String,
        #[serde(default)]
        environments: Vec<EnvironmentFlag>,
    },
}

impl Grant {
    /// The slug, and the environments (empty: every environment) this grant covers.
    pub fn parts(&self) -> (&str, Vec<Option<&str>>) {
        match self {
            Grant::Short(s) => match s.split_once(':') {
                Some((slug, env)) => (slug, vec![Some(env)]),
                None => (s.as_str(), vec![None]),
            },
            Grant::Table { slug, environments } if environments.is_empty() => {
                (slug.as_str(), vec![None])
            }
            Grant::Table { slug, environments } => (
                slug.as_str(),
                environments.iter().map(|e| Some(e.as_str())).collect(),
            ),
        }
    }

    /// Whether this grant covers `slug` in `env`.
    pub fn covers(&self, slug: &str, env: EnvironmentFlag) -> bool {
        let (s, envs) = self.parts();
        s == slug && envs.iter().any(|e| e.is_none_or(|e| e == env.as_str()))
    }
}

/// `[auth]`: the gateway's own token endpoint.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct AuthTokenSettings {
    /// Environment variable holding the secret the gateway signs its access tokens with. Replicas must
    /// share it; without it each process makes up its own (tokens then work only on that replica).
    pub signing_key_env: Option<String>,
    /// Longest a source's `jwks_url` may take to answer.
    #[serde(default = "default_jwks_timeout")]
    #[validate(range(min = 0.1, max = 60.0))]
    pub jwks_timeout_secs: f64,
    /// A source's `jwks_url` is fetched at most once per this many seconds (an unknown `kid` or a
    /// failed fetch included: negative answers are kept as long).
    #[serde(default = "default_jwks_refresh_min")]
    #[validate(range(min = 1, max = 86_400))]
    pub jwks_refresh_min_secs: u64,
    /// Token requests per minute from one client address, in bursts of as many; past it, 429 with
    /// `Retry-After`. 0 turns the limit off.
    #[serde(default = "default_token_rate_limit")]
    pub token_rate_limit_per_minute: u32,
}

impl Default for AuthTokenSettings {
    fn default() -> Self {
        AuthTokenSettings {
            signing_key_env: None,
            jwks_timeout_secs: default_jwks_timeout(),
            jwks_refresh_min_secs: default_jwks_refresh_min(),
            token_rate_limit_per_minute: default_token_rate_limit(),
        }
    }
}

fn default_jwks_timeout() -> f64 {
    5.0
}

fn default_jwks_refresh_min() -> u64 {
    60
}

fn default_token_rate_limit() -> u32 {
    120
}

/// `[server]`: where the gateway listens and how partners reach it.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address and port to bind; port 0 picks a free one.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The base URL partners use; the gateway's status URLs start with it.
    #[serde(default = "default_public_url")]
    pub public_url: Url,
    /// Largest accepted request body, in bytes.
    #[serde(default = "default_body_limit")]
    #[validate(range(min = 1024, max = 16_777_216))]
    pub body_limit_bytes: usize,
    /// Worker threads; 0 means one per core.
    #[serde(default)]
    #[validate(range(max = 256))]
    pub workers: usize,
    /// Seconds a client has to send its request headers (a slow client cannot hold a worker).
    #[serde(default = "default_header_timeout")]
    #[validate(range(min = 0.1, max = 300.0))]
    pub header_timeout_secs: f64,
    /// Seconds a client has to send its request body.
    #[serde(default = "default_body_timeout")]
    #[validate(range(min = 0.1, max = 300.0))]
    pub body_timeout_secs: f64,
    /// Seconds an idle keep-alive connection stays open (up to 0.5 s less: actix's clock ticks every
    /// 0.5 s).
    #[serde(default = "default_keep_alive")]
    #[validate(range(min = 0.0, max = 3600.0))]
    pub keep_alive_secs: f64,
    /// Seconds in-flight requests (streamed downloads included) get to finish after SIGTERM/SIGINT.
    #[serde(default = "default_shutdown_grace")]
    #[validate(range(min = 0.0, max = 3600.0))]
    pub shutdown_grace_secs: f64,
    /// When set, `/metrics` is served here (an internal address) and no longer on `listen`.
    pub metrics_listen: Option<String>,
    /// Partner connections open at once; past it a new one gets 503 and is closed. Default: the
    /// process's open-file limit less 256 (for the store, the EHRs and files).
    #[validate(range(min = 1))]
    pub max_connections: Option<usize>,
}

/// `[store]`: where jobs are kept.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// `sqlite://path/to/file.db` (embedded default) or `postgres://…`.
    #[serde(default = "default_store_url")]
    #[validate(length(min = 1))]
    pub url: String,
    /// Connections in the pool.
    #[serde(default = "default_pool")]
    #[validate(range(min = 1, max = 128))]
    pub max_connections: u32,
}

/// `[upstream]`: outbound HTTP to the EHRs.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSettings {
    /// Seconds to establish a connection.
    #[serde(default = "default_connect_timeout")]
    #[validate(range(min = 0.05, max = 120.0))]
    pub connect_timeout_secs: f64,
    /// Seconds for a whole kick-off or status request, answer included.
    #[serde(default = "default_request_timeout")]
    #[validate(range(min = 0.05, max = 600.0))]
    pub request_timeout_secs: f64,
    /// Seconds a connection to an EHR may sit idle and still be used again. Keep it below the EHRs'
    /// own keep-alive (5 s in Node, Apache and actix): a request that goes out as the EHR closes an
    /// idle connection meets a closed connection, and a kick-off is never sent twice.
    #[serde(default = "default_pool_idle")]
    #[validate(range(min = 0.1, max = 3600.0))]
    pub pool_idle_secs: f64,
}

/// `[log]`: how the gateway logs.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `pretty` for people, `json` for log pipelines.
    #[serde(default)]
    pub format: LogFormat,
    /// A `RUST_LOG`-style filter; `RUST_LOG` itself wins when set.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// Days the message log keeps its records; older ones are pruned by the gateway.
    #[serde(default = "default_retention_days")]
    #[validate(range(min = 1, max = 3650))]
    pub retention_days: u32,
}

/// `[admin]`: the operators' API (`/admin/...`) and dashboard (`/admin/ui/`), on their own
/// credential, never a partner's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Hex SHA-256 of the admin API key, sent as `Authorization: Bearer <key>` (and typed into the
    /// dashboard's sign-in form). Unset: the admin API answers 401 to everyone and no one can sign in.
    #[serde(default)]
    pub api_key_sha256: Option<String>,
    /// How long a dashboard sign-in lasts, in seconds (60 to 604,800; default 8 hours).
    #[serde(default = "default_session_ttl_secs")]
    pub session_ttl_secs: u64,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            api_key_sha256: None,
            session_ttl_secs: default_session_ttl_secs(),
        }
    }
}

fn default_session_ttl_secs() -> u64 {
    8 * 3600
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// `[[destinations]]`: one EHR the gateway routes to.
#[derive(Debug, Clone, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct DestinationSettings {
    /// The `{destinationSlug}` of the partner-facing URLs.
    pub slug: DestinationSlug,
    /// The Redox destination id (a UUID), as partners put it in `Meta.Destinations[].ID`.
    pub id: Option<Uuid>,
    /// A name for people.
    #[validate(length(min = 1, max = 128))]
    pub name: String,
    pub vendor: Vendor,
    /// Kick-offs in flight to this destination at once (per environment); more get 429.
    #[serde(default = "default_max_concurrent")]
    #[validate(range(min = 1, max = 100_000))]
    pub max_concurrent_kickoffs: usize,
    /// One entry per environment flag this destination has.
    pub environments: BTreeMap<EnvironmentFlag, EnvironmentSettings>,
}

/// `[destinations.environments.<Development|Staging|Production>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSettings {
    /// The upstream FHIR base URL, e.g. `https://fhir-ehr.cerner.com/r4/{tenant}`.
    pub base_url: Url,
    /// How the gateway authenticates to this upstream.
    #[serde(default)]
    pub auth: AuthSettings,
    /// Overrides the vendor profile's supported kick-off parameters for this tenant.
    pub supported_parameters: Option<Vec<Param>>,
    /// Hosts besides the base URL's own that files may be fetched from (pre-signed storage).
    #[serde(default)]
    pub file_hosts: Vec<String>,
    /// Allow upstream and file URLs on loopback, private or link-local addresses (local tests only).
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// Read the EHR's `metadata` (and its export OperationDefinitions) at start and every
    /// `discover_interval_secs`, and narrow export levels, parameters and types to what it declares.
    /// Default: true for `bulk-data`, false for profiles built from a vendor's documents.
    pub discover: Option<bool>,
    /// How often discovery runs again (default 3600).
    #[serde(default = "default_discover_interval")]
    pub discover_interval_secs: u64,
}

fn default_discover_interval() -> u64 {
    3600
}

impl EnvironmentSettings {
    /// Whether discovery is on for a destination of `vendor`.
    pub fn discovers(&self, vendor: Vendor) -> bool {
        self.discover.unwrap_or(vendor == Vendor::BulkData)
    }
}

/// How the gateway authenticates to an upstream.
// Read once at boot; the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuthSettings {
    /// No Authorization header.
    #[default]
    None,
    /// A static bearer token read from an environment variable or a file, never from this file.
    Bearer {
        token_env: Option<String>,
        token_file: Option<PathBuf>,
    },
    /// SMART Backend Services: a client assertion signed with the destination's private key.
    SmartBackendServices {
        client_id: String,
        private_key_file: Option<PathBuf>,
        private_key_env: Option<String>,
        kid: String,
        /// `RS384` or `ES384`.
        alg: String,
        scope: String,
        /// Otherwise discovered from `{base_url}/.well-known/smart-configuration`.
        token_url: Option<Url>,
        jku: Option<Url>,
    },
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
fn default_public_url() -> Url {
    Url::parse("http://127.0.0.1:8080").expect("static URL")
}
fn default_body_limit() -> usize {
    64 * 1024
}
fn default_store_url() -> String {
    "sqlite://data/fhirgate.db".to_owned()
}
fn default_pool() -> u32 {
    8
}
fn default_connect_timeout() -> f64 {
    5.0
}
fn default_request_timeout() -> f64 {
    30.0
}
fn default_pool_idle() -> f64 {
    4.0
}
fn default_header_timeout() -> f64 {
    5.0
}
fn default_body_timeout() -> f64 {
    10.0
}
fn default_keep_alive() -> f64 {
    5.0
}
fn default_shutdown_grace() -> f64 {
    30.0
}
fn default_retention_days() -> u32 {
    30
}
fn default_max_concurrent() -> usize {
    64
}
fn default_poll_interval() -> u64 {
    5
}
fn default_tick() -> f64 {
    1.0
}
fn default_claim_ttl() -> u64 {
    60
}
fn default_batch() -> u32 {
    128
}
fn default_max_backoff() -> u64 {
    600
}
fn default_pending_stale() -> u64 {
    120
}
fn default_max_retry_after() -> u64 {
    3600
}
fn default_max_poll_failures() -> u32 {
    10
}
fn default_concurrency() -> u32 {
    32
}
fn default_notify_attempts() -> u32 {
    8
}
fn default_progress() -> f64 {
    3.0
}
fn default_sandbox_retry_after() -> u64 {
    1
}
fn default_true() -> bool {
    true
}
fn default_file_host() -> String {
    "localhost".to_owned()
}
fn default_log_level() -> String {
    "info".to_owned()
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: default_listen(),
            public_url: default_public_url(),
            body_limit_bytes: default_body_limit(),
            workers: 0,
            header_timeout_secs: default_header_timeout(),
            body_timeout_secs: default_body_timeout(),
            keep_alive_secs: default_keep_alive(),
            shutdown_grace_secs: default_shutdown_grace(),
            metrics_listen: None,
            max_connections: None,
        }
    }
}
impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            url: default_store_url(),
            max_connections: default_pool(),
        }
    }
}
impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            connect_timeout_secs: default_connect_timeout(),
            request_timeout_secs: default_request_timeout(),
            pool_idle_secs: default_pool_idle(),
        }
    }
}
impl Default for JobSettings {
    fn default() -> Self {
        JobSettings {
            poll_interval_secs: default_poll_interval(),
            pending_stale_secs: default_pending_stale(),
            max_retry_after_secs: default_max_retry_after(),
            retention_days: default_retention_days(),
        }
    }
}
impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            enabled: false,
            tick_secs: default_tick(),
            claim_ttl_secs: default_claim_ttl(),
            batch: default_batch(),
            max_backoff_secs: default_max_backoff(),
            notify_max_attempts: default_notify_attempts(),
            max_poll_failures: default_max_poll_failures(),
            concurrency: default_concurrency(),
        }
    }
}
impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            progress_secs: default_progress(),
            retry_after_secs: default_sandbox_retry_after(),
            redirect_files: true,
            file_host: default_file_host(),
            one_export_per_client: false,
        }
    }
}
impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::default(),
            level: default_log_level(),
            retention_days: default_retention_days(),
        }
    }
}

/// Why the settings could not be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} not found")]
    Missing(PathBuf),
    #[error("{0}")]
    Parse(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads the file at `path` (or the embedded default), applies `FHIRGATE__` overrides, and checks it.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let base = match path {
            Some(p) if !p.exists() => return Err(ConfigError::Missing(p.to_owned())),
            Some(p) => Figment::from(Toml::file(p)),
            None => Figment::from(Toml::string(EMBEDDED_DEFAULT)),
        };
        Self::from_figment(base.merge(Env::prefixed("FHIRGATE__").split("__")))
    }

    /// Parses settings from TOML text alone (tests, `check-config` of a string).
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Parse(e.to_string()))?;
        settings.check()?;
        Ok(settings)
    }

    /// Every rule a value must meet beyond its type; messages name the key.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.validate()
            .map_err(|e| ConfigError::Invalid(e.to_string().replace('\n', "; ")))?;
        let invalid = |key: String, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "server.listen".into(),
                "must be an address and port such as 127.0.0.1:8080",
            );
        }
        if (self.jobs.pending_stale_secs as f64) <= self.upstream.request_timeout_secs {
            return invalid(
                "jobs.pending_stale_secs".into(),
                "must be longer than [upstream] request_timeout_secs, or a kick-off still in flight would be taken for a dead one",
            );
        }
        if !matches!(self.server.public_url.scheme(), "http" | "https") {
            return invalid("server.public_url".into(), "must be an http or https URL");
        }
        if !(self.store.url.starts_with("sqlite:")
            || self.store.url.starts_with("postgres://")
            || self.store.url.starts_with("postgresql://"))
        {
            return invalid("store.url".into(), "must start with sqlite: or postgres://");
        }
        if let Some(h) = &self.admin.api_key_sha256
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return invalid(
                "admin.api_key_sha256".into(),
                "must be 64 hex digits (a SHA-256)",
            );
        }
        if !(60..=604_800).contains(&self.admin.session_ttl_secs) {
            return invalid(
                "admin.session_ttl_secs".into(),
                "must be from 60 (a minute) to 604800 (a week)",
            );
        }
        for (i, src) in self.sources.iter().enumerate() {
            if self.sources[..i].iter().any(|o| o.id == src.id) {
                return invalid(format!("sources[{i}].id"), "is used by another source");
            }
            if let Some(url) = &src.notify_url
                && !matches!(url.scheme(), "http" | "https")
            {
                return invalid(
                    format!("sources[{i}].notify_url"),
                    "must be an http or https URL",
                );
            }
            if let Some(h) = &src.api_key_sha256
                && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return invalid(
                    format!("sources[{i}].api_key_sha256"),
                    "must be 64 hex digits (a SHA-256)",
                );
            }
            if !src.allowed_scopes().reads_anything() {
                return invalid(
                    format!("sources[{i}].scopes"),
                    "must let the source read at least one resource type, e.g. [\"system/*.read\"]",
                );
            }
            for (j, grant) in src.destinations.iter().enumerate() {
                let (slug, envs) = grant.parts();
                let known = self.destinations.iter().find(|d| d.slug.as_str() == slug);
                let env_ok = known.is_some_and(|d| {
                    envs.iter().all(|env| {
                        env.is_none_or(|e| {
                            EnvironmentFlag::try_from(e)
                                .is_ok_and(|e| d.environments.contains_key(&e))
                        })
                    })
                });
                if !env_ok {
                    return invalid(
                        format!("sources[{i}].destinations[{j}]"),
                        "must name a configured destination (and its environments) as \"slug\", \"slug:Environment\" or { slug, environments }",
                    );
                }
            }
        }
        for (i, d) in self.destinations.iter().enumerate() {
            if self.destinations[..i].iter().any(|o| o.slug == d.slug) {
                return invalid(
                    format!("destinations[{i}].slug"),
                    "is used by another destination",
                );
            }
            if d.environments.is_empty() {
                return invalid(
                    format!("destinations[{i}].environments"),
                    "needs at least one environment",
                );
            }
            for (env, e) in &d.environments {
                let key = format!("destinations[{i}].environments.{env}");
                if !matches!(e.base_url.scheme(), "http" | "https") || e.base_url.cannot_be_a_base()
                {
                    return invalid(format!("{key}.base_url"), "must be an http or https URL");
                }
                if e.base_url.query().is_some() || e.base_url.fragment().is_some() {
                    return invalid(
                        format!("{key}.base_url"),
                        "must not carry a query or fragment",
                    );
                }
                if let AuthSettings::SmartBackendServices {
                    alg,
                    private_key_file,
                    private_key_env,
                    ..
                } = &e.auth
                {
                    if !matches!(alg.as_str(), "RS384" | "ES384") {
                        return invalid(format!("{key}.auth.alg"), "must be RS384 or ES384");
                    }
                    if private_key_file.is_some() == private_key_env.is_some() {
                        return invalid(
                            format!("{key}.auth"),
                            "needs exactly one of private_key_file or private_key_env",
                        );
                    }
                }
                if let AuthSettings::Bearer {
                    token_env,
                    token_file,
                } = &e.auth
                    && token_env.is_some() == token_file.is_some()
                {
                    return invalid(
                        format!("{key}.auth"),
                        "bearer auth needs exactly one of token_env or token_file",
                    );
                }
            }
        }
        Ok(())
    }
}

impl Settings {
    /// What is allowed but likely wrong, one sentence each naming the keys: logged at startup and
    /// printed by `check-config`, which still passes.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        // The sandbox destination is the gateway calling its own server: an idle connection the
        // client may still reuse must not outlive the server's keep-alive (which closes up to 0.5 s
        // early), or a call can go out as the server closes it (a kick-off is then a 502: never resent).
        let (keep_alive, pool_idle) = (self.server.keep_alive_secs, self.upstream.pool_idle_secs);
        if self.sandbox_enabled() && keep_alive > 0.0 && pool_idle >= keep_alive - 0.5 {
            warnings.push(format!(
                "upstream.pool_idle_secs ({pool_idle} s) is not below server.keep_alive_secs ({keep_alive} s) \
                 less 0.5 s: the gateway's calls to its own sandbox destination can go out on a \
                 connection its server is closing; lower pool_idle_secs or raise keep_alive_secs"
            ));
        }
        warnings
    }

    /// Whether the built-in sandbox EHR is served (some destination uses it).
    pub fn sandbox_enabled(&self) -> bool {
        self.destinations
            .iter()
            .any(|d| d.vendor == Vendor::Sandbox)
    }

    /// The source configured under `id`, if any.
    pub fn source(&self, id: &str) -> Option<&SourceSettings> {
        self.sources.iter().find(|s| s.id.to_string() == id)
    }
}

impl AuthSettings {
    /// Reads the credential this auth names. `key` names the setting in the error.
    pub fn resolve(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        match self {
            AuthSettings::None => Ok(None),
            AuthSettings::Bearer {
                token_env: Some(var),
                ..
            } => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
                _ => Err(ConfigError::Invalid(format!(
                    "{key}.auth.token_env: environment variable {var} is not set"
                ))),
            },
            AuthSettings::Bearer {
                token_file: Some(path),
                ..
            } => match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
                _ => Err(ConfigError::Invalid(format!(
                    "{key}.auth.token_file: {} cannot be read or is empty",
                    path.display()
                ))),
            },
            AuthSettings::Bearer { .. } => Err(ConfigError::Invalid(format!(
                "{key}.auth: bearer auth needs token_env or token_file"
            ))),
            AuthSettings::SmartBackendServices {
                private_key_file,
                private_key_env,
                ..
            } => {
                let pem = match (private_key_file, private_key_env) {
                    (Some(path), None) => std::fs::read_to_string(path).map_err(|_| {
                        ConfigError::Invalid(format!(
                            "{key}.auth.private_key_file: {} cannot be read",
                            path.display()
                        ))
                    })?,
                    (None, Some(var)) => std::env::var(var).map_err(|_| {
                        ConfigError::Invalid(format!(
                            "{key}.auth.private_key_env: environment variable {var} is not set"
                        ))
                    })?,
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "{key}.auth: give exactly one of private_key_file or private_key_env"
                        )));
                    }
                };
                Ok(Some(Secret::new(pem)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_default_is_valid() {
        Settings::from_toml(EMBEDDED_DEFAULT).expect("the example config must load");
    }

    #[test]
    fn an_idle_ehr_connection_is_reused_for_4_seconds_unless_configured_and_0_is_refused() {
        let default = Settings::from_toml("").unwrap();
        assert_eq!(default.upstream.pool_idle_secs, 4.0);
        let set = Settings::from_toml("[upstream]\npool_idle_secs = 2.5\n").unwrap();
        assert_eq!(set.upstream.pool_idle_secs, 2.5);
        let err = Settings::from_toml("[upstream]\npool_idle_secs = 0.0\n").unwrap_err();
        assert!(err.to_string().contains("upstream.pool_idle_secs"), "{err}");
    }

    #[test]
    fn finished_jobs_are_kept_30_days_unless_configured_and_0_or_more_than_ten_years_is_refused() {
        assert_eq!(Settings::from_toml("").unwrap().jobs.retention_days, 30);
        let set = Settings::from_toml("[jobs]\nretention_days = 90\n").unwrap();
        assert_eq!(set.jobs.retention_days, 90);
        for bad in ["0", "3651", "-1", "\"a month\""] {
            let err =
                Settings::from_toml(&format!("[jobs]\nretention_days = {bad}\n")).unwrap_err();
            assert!(err.to_string().contains("retention_days"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_sandbox_whose_own_keep_alive_ends_before_the_clients_idle_reuse_is_warned_about() {
        const SANDBOX: &str = "[[destinations]]\nslug = \"sandbox\"\nname = \"Sandbox\"\nvendor = \"sandbox\"\n\
                               [destinations.environments.Development]\nbase_url = \"http://127.0.0.1:8080/sandbox/r4\"\n";
        let racing =
            format!("[server]\nkeep_alive_secs = 3.0\n[upstream]\npool_idle_secs = 2.5\n{SANDBOX}");
        let warnings = Settings::from_toml(&racing).unwrap().warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("upstream.pool_idle_secs")
                && warnings[0].contains("server.keep_alive_secs"),
            "{warnings:?}"
        );
        // The defaults (5 s and 4 s), no keep-alive at all, or no sandbox: nothing to say.
        for quiet in [
            EMBEDDED_DEFAULT.to_owned(),
            format!("[server]\nkeep_alive_secs = 3.0\n[upstream]\npool_idle_secs = 2.4\n{SANDBOX}"),
            format!("[server]\nkeep_alive_secs = 0.0\n{SANDBOX}"),
            "[server]\nkeep_alive_secs = 3.0\n".to_owned(),
        ] {
            let settings = Settings::from_toml(&quiet).unwrap();
            assert_eq!(settings.warnings(), Vec::<String>::new(), "{quiet}");
        }
    }

    #[test]
    fn an_unknown_key_is_named_in_the_error() {
        let err =
            Settings::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlsiten = 3\n").unwrap_err();
        assert!(err.to_string().contains("lsiten"), "{err}");
    }

    #[test]
    fn a_bad_base_url_is_named_in_the_error() {
        let toml = r#"
[[destinations]]
slug = "ehr"
name = "EHR"
vendor = "bulk-data"
[destinations.environments.Development]
base_url = "ftp://example.org/fhir"
"#;
        let err = Settings::from_toml(toml).unwrap_err().to_string();
        assert!(
            err.contains("destinations[0].environments.Development.base_url"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_environment_flag_is_refused() {
        let toml = r#"
[[destinations]]
slug = "ehr"
name = "EHR"
vendor = "bulk-data"
[destinations.environments.production]
base_url = "https://example.org/fhir"
"#;
        assert!(Settings::from_toml(toml).is_err());
    }
}
