//! The `fhirgate` command line: serve | validate | check-config | migrate | logs | jobs | openapi. The
//! binary's `main` only calls [`main`]; the admin client behind `logs` and `jobs` and the offline
//! `validate` live beside it.

pub mod admin_client;
pub mod validate;

use crate::cli::validate::{Verdict, offline_registry, validate_text};
use crate::config::Settings;
use crate::startup::Application;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// fhirgate: a FHIR Bulk Data gateway between partner apps and EHRs.
#[derive(Debug, Parser)]
#[command(name = "fhirgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (with no --config: the embedded defaults).
    Serve {
        /// A TOML config file; FHIRGATE__SECTION__KEY variables override it.
        #[arg(long, env = "FHIRGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check envelope files offline: print the OperationOutcome, or the upstream request that would be sent.
    Validate {
        /// Envelope JSON files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Destination slug to route to (default: the first configured).
        #[arg(long)]
        destination: Option<String>,
        /// Environment flag: Development, Staging or Production (default: the destination's first).
        #[arg(long)]
        environment: Option<String>,
        #[arg(long, env = "FHIRGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Load and check a configuration, its secrets included; exit 1 naming the bad key.
    CheckConfig {
        #[arg(long, env = "FHIRGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Do not read tokens and keys (for checking files on a machine without them).
        #[arg(long)]
        skip_secrets: bool,
        /// Also read each EHR's metadata (capability discovery) and show what it declares; exit 1
        /// when a destination with `discover = true` cannot be read.
        #[arg(long)]
        online: bool,
    },
    /// Create or upgrade the job store's tables, then exit.
    Migrate {
        #[arg(long, env = "FHIRGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Search the message log through the admin API, or show everything under one Log ID.
    Logs {
        /// Show this Log ID's requests, upstream calls and jobs.
        log_id: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        /// group-export, patient-export, system-export, status-check, file-download, export-delete, …
        #[arg(long)]
        event_type: Option<String>,
        /// The gateway's status class: 2xx, 3xx, 4xx or 5xx.
        #[arg(long)]
        status: Option<String>,
        /// From this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Up to this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        job_id: Option<String>,
        /// request (default), upstream or all.
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// List jobs through the admin API, or show one with its attempts and upstream calls.
    Jobs {
        /// Show this job.
        job_id: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
        /// pending, kickoff-unknown, accepted, failed, completed, export-failed, expired or deleted.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        destination: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        #[arg(long)]
        log_id: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Print the OpenAPI 3.1 document (what /openapi.json serves; committed as schemas/openapi.json).
    Openapi,
}

/// How to reach the admin API.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The gateway's base URL.
    #[arg(long, env = "FHIRGATE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The admin API key (the one whose SHA-256 is [admin] api_key_sha256).
    #[arg(long, env = "FHIRGATE_ADMIN_KEY", hide_env_values = true)]
    admin_key: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct PageArgs {
    /// Rows per page (1-500).
    #[arg(long)]
    limit: Option<u32>,
    /// Rows to skip.
    #[arg(long)]
    offset: Option<u64>,
}

/// Calls the admin API and prints its answer as a table (or JSON).
fn admin_call(
    admin: &AdminArgs,
    path: &str,
    query: Vec<(&str, Option<String>)>,
    render: impl Fn(&serde_json::Value) -> String,
) -> Result<ExitCode, ExitCode> {
    let target = crate::cli::admin_client::AdminTarget {
        url: admin.url.clone(),
        key: admin.admin_key.clone(),
    };
    let query: Vec<(&str, String)> = query
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let rt = tokio::runtime::Runtime::new().map_err(|_| ExitCode::from(1))?;
    let answer = rt
        .block_on(crate::cli::admin_client::get(&target, path, &query))
        .map_err(|e| {
            eprintln!("fhirgate: {e}");
            ExitCode::from(1)
        })?;
    if admin.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
    } else {
        print!("{}", render(&answer));
    }
    Ok(ExitCode::SUCCESS)
}

/// A path segment the partner typed, kept to what ids are made of.
fn segment(id: &str) -> Result<String, ExitCode> {
    if !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(id.to_owned())
    } else {
        eprintln!("fhirgate: {id:?} is not an id");
        Err(ExitCode::from(2))
    }
}

fn load(config: Option<&PathBuf>) -> Result<Settings, ExitCode> {
    Settings::load(config.map(PathBuf::as_path)).map_err(|e| {
        eprintln!("fhirgate: {e}");
        ExitCode::from(1)
    })
}

/// The command line's entry: parses the arguments and runs the command.
/// `check-config --online`: discovery against every destination, one line each.
fn check_online(registry: &crate::connectors::registry::Registry) -> Result<ExitCode, ExitCode> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("fhirgate: {e}");
        ExitCode::from(1)
    })?;
    let mut connectors: Vec<_> = registry.all().cloned().collect();
    connectors.sort_by_key(|c| (c.slug.as_str().to_owned(), c.environment.as_str()));
    let mut failed = false;
    for connector in connectors {
        let on = connector.discovers();
        let label = format!(
            "{}/{}{}",
            connector.slug,
            connector.environment,
            if on {
                ""
            } else {
                " (discover = false: shown, not applied)"
            }
        );
        match runtime.block_on(connector.discover()) {
            Ok(found) => {
                let narrowed =
                    crate::connectors::discovery::narrow(connector.capabilities(), &found);
                println!(
                    "{label}: discovered: levels {}; parameters {}; {} resource type(s); {} export OperationDefinition(s) read",
                    found.kinds.as_ref().map_or("not declared".to_owned(), |k| {
                        serde_json::to_string(k).unwrap_or_default()
                    }),
                    narrowed
                        .parameters
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    found.resource_types.as_ref().map_or(0, Vec::len),
                    found.operation_definitions
                );
            }
            Err(why) => {
                failed |= on;
                println!("{label}: discovery failed: {why}");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(code) => code,
    }
}

fn run(cli: Cli) -> Result<ExitCode, ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let settings = load(config.as_ref())?;
            crate::observe::telemetry::init(&settings.log);
            serve(settings)
        }
        Command::Validate {
            files,
            destination,
            environment,
            config,
        } => {
            let settings = load(config.as_ref())?;
            let registry = offline_registry(&settings).map_err(|e| {
                eprintln!("fhirgate: {e}");
                ExitCode::from(1)
            })?;
            let mut all_valid = true;
            for file in &files {
                let text = match std::fs::read_to_string(file) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("fhirgate: cannot read {}: {e}", file.display());
                        all_valid = false;
                        continue;
                    }
                };
                let verdict = validate_text(
                    &registry,
                    &settings,
                    &text,
                    destination.as_deref(),
                    environment.as_deref(),
                );
                let (label, json) = match &verdict {
                    Verdict::Valid(req) => ("valid", serde_json::to_string_pretty(req)),
                    Verdict::Invalid(oo) => {
                        all_valid = false;
                        ("invalid", serde_json::to_string_pretty(oo))
                    }
                };
                println!("{}: {label}", file.display());
                println!("{}", json.unwrap_or_default());
            }
            Ok(if all_valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::CheckConfig {
            config,
            skip_secrets,
            online,
        } => {
            let settings = load(config.as_ref())?;
            let http = crate::connectors::http::UpstreamClient::new(
                &settings.upstream,
                std::sync::Arc::new(crate::observe::metrics::Metrics::new()),
            )
            .map_err(|e| {
                eprintln!("fhirgate: {e}");
                ExitCode::from(1)
            })?;
            let secrets = if skip_secrets {
                crate::connectors::registry::Secrets::Skip
            } else {
                crate::connectors::registry::Secrets::Resolve
            };
            let registry = crate::connectors::registry::Registry::build(&settings, &http, secrets)
                .map_err(|e| {
                    eprintln!("fhirgate: {e}");
                    ExitCode::from(1)
                })?;
            for warning in settings.warnings() {
                eprintln!("warning: {warning}");
            }
            println!(
                "configuration OK: {} destination(s), {} connector(s), store {}",
                settings.destinations.len(),
                registry.len(),
                redacted_store_url(&settings.store.url)
            );
            if online {
                return check_online(&registry);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs {
            log_id,
            admin,
            source,
            destination,
            environment,
            event_type,
            status,
            since,
            until,
            job_id,
            kind,
            page,
        } => match log_id {
            Some(id) => admin_call(
                &admin,
                &format!("/admin/logs/{}", segment(&id)?),
                Vec::new(),
                crate::cli::admin_client::render_log_detail,
            ),
            None => {
                let shown = kind.clone();
                admin_call(
                    &admin,
                    "/admin/logs",
                    vec![
                        ("source", source),
                        ("destination", destination),
                        ("environment", environment),
                        ("eventType", event_type),
                        ("status", status),
                        ("since", since),
                        ("until", until),
                        ("jobId", job_id),
                        ("kind", kind),
                        ("limit", page.limit.map(|n| n.to_string())),
                        ("offset", page.offset.map(|n| n.to_string())),
                    ],
                    |v| crate::cli::admin_client::render_log_page(v, shown.as_deref()),
                )
            }
        },
        Command::Jobs {
            job_id,
            admin,
            state,
            source,
            destination,
            environment,
            log_id,
            page,
        } => match job_id {
            Some(id) => admin_call(
                &admin,
                &format!("/admin/jobs/{}", segment(&id)?),
                Vec::new(),
                crate::cli::admin_client::render_job_detail,
            ),
            None => admin_call(
                &admin,
                "/admin/jobs",
                vec![
                    ("state", state),
                    ("source", source),
                    ("destination", destination),
                    ("environment", environment),
                    ("logId", log_id),
                    ("limit", page.limit.map(|n| n.to_string())),
                    ("offset", page.offset.map(|n| n.to_string())),
                ],
                crate::cli::admin_client::render_job_page,
            ),
        },
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::api::openapi::document()).unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config } => {
            let settings = load(config.as_ref())?;
            let rt = tokio::runtime::Runtime::new().map_err(|_| ExitCode::from(1))?;
            rt.block_on(crate::store::open(&settings.store.url, 1))
                .map_err(|e| {
                    eprintln!("fhirgate: {e}");
                    ExitCode::from(1)
                })?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The store URL without its password or query, for printing.
fn redacted_store_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            u.set_query(None);
            u.to_string()
        }
        Err(_) => raw.split('?').next().unwrap_or_default().to_owned(),
    }
}

fn serve(settings: Settings) -> Result<ExitCode, ExitCode> {
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let app = Application::build(settings).await.map_err(|e| {
            tracing::error!(message = "The gateway could not start.", error = %e);
            eprintln!("fhirgate: {e}");
            ExitCode::from(1)
        })?;
        tracing::info!(message = "fhirgate listening.", port = app.port());
        app.run_until_stopped().await.map_err(|e| {
            eprintln!("fhirgate: {e}");
            ExitCode::from(1)
        })?;
        Ok(ExitCode::SUCCESS)
    })
}
