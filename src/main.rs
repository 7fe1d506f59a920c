//! The `fhirgate` command line: serve | validate | check-config | migrate.

use clap::{Parser, Subcommand};
use fhirgate::config::Settings;
use fhirgate::startup::Application;
use fhirgate::validate::{Verdict, offline_registry, validate_text};
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
    },
    /// Create or upgrade the job store's tables, then exit.
    Migrate {
        #[arg(long, env = "FHIRGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn load(config: Option<&PathBuf>) -> Result<Settings, ExitCode> {
    Settings::load(config.map(PathBuf::as_path)).map_err(|e| {
        eprintln!("fhirgate: {e}");
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
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
            fhirgate::telemetry::init(&settings.log);
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
        } => {
            let settings = load(config.as_ref())?;
            let http = fhirgate::connectors::http::UpstreamClient::new(&settings.upstream)
                .map_err(|e| {
                    eprintln!("fhirgate: {e}");
                    ExitCode::from(1)
                })?;
            let secrets = if skip_secrets {
                fhirgate::connectors::registry::Secrets::Skip
            } else {
                fhirgate::connectors::registry::Secrets::Resolve
            };
            let registry =
                fhirgate::connectors::registry::Registry::build(&settings, &http, secrets)
                    .map_err(|e| {
                        eprintln!("fhirgate: {e}");
                        ExitCode::from(1)
                    })?;
            println!(
                "configuration OK: {} destination(s), {} connector(s), store {}",
                settings.destinations.len(),
                registry.len(),
                redacted_store_url(&settings.store.url)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config } => {
            let settings = load(config.as_ref())?;
            let rt = tokio::runtime::Runtime::new().map_err(|_| ExitCode::from(1))?;
            rt.block_on(fhirgate::jobs::open(&settings.store.url, 1))
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
