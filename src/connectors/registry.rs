//! `(slug, environment) → connector`, built once at boot from the settings.

use super::smart::{SmartClient, SmartConfig};
use super::{Connector, UpstreamAuth, http::UpstreamClient, profile_capabilities};
use crate::config::AuthSettings;
use crate::config::{ConfigError, Settings};
use crate::domain::secret::Secret;
use crate::domain::{DestinationSlug, EnvironmentFlag};
use std::collections::HashMap;
use std::sync::Arc;

/// Every configured upstream.
#[derive(Debug, Default)]
pub struct Registry {
    connectors: HashMap<(String, EnvironmentFlag), Arc<Connector>>,
}

/// Whether to read credentials now (serving) or leave them out (offline validation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Resolve,
    Skip,
}

/// Builds how a connector authenticates from its settings and the secret they name.
fn upstream_auth(
    auth: &AuthSettings,
    secret: Option<Secret>,
    http: &UpstreamClient,
    key: &str,
    target: (&str, &str),
) -> Result<UpstreamAuth, ConfigError> {
    Ok(match (auth, secret) {
        (AuthSettings::None, _) | (_, None) => UpstreamAuth::None,
        (AuthSettings::Bearer { .. }, Some(token)) => UpstreamAuth::Bearer(token),
        (
            AuthSettings::SmartBackendServices {
                client_id,
                kid,
                alg,
                scope,
                token_url,
                jku,
                ..
            },
            Some(pem),
        ) => {
            let config = SmartConfig {
                client_id: client_id.clone(),
                private_key_pem: pem,
                alg: alg.clone(),
                kid: kid.clone(),
                jku: jku.as_ref().map(ToString::to_string),
                scope: scope.clone(),
                token_url: token_url.clone(),
            };
            let client = SmartClient::new(config, http.plain().clone()).map_err(|why| {
                ConfigError::Invalid(format!("{key}.auth: the private key {why}"))
            })?;
            UpstreamAuth::Smart(std::sync::Arc::new(client.observed(
                http.metrics().clone(),
                target.0,
                target.1,
            )))
        }
    })
}

impl Registry {
    pub fn build(
        settings: &Settings,
        http: &UpstreamClient,
        secrets: Secrets,
    ) -> Result<Registry, ConfigError> {
        let mut connectors = HashMap::new();
        for (i, d) in settings.destinations.iter().enumerate() {
            for (env, e) in &d.environments {
                let key = format!("destinations[{i}].environments.{env}");
                // Every hop to this EHR and its file hosts: public addresses only, unless allowed.
                let http = &http.for_destination(e.allow_private_addresses);
                let token = match secrets {
                    Secrets::Resolve => upstream_auth(
                        &e.auth,
                        e.auth.resolve(&key)?,
                        http,
                        &key,
                        (d.slug.as_str(), env.as_str()),
                    )?,
                    Secrets::Skip => UpstreamAuth::None,
                };
                let mut caps = profile_capabilities(d.vendor);
                if let Some(params) = &e.supported_parameters {
                    caps.parameters = params.clone();
                }
                let connector = Connector::new(
                    d.slug.clone(),
                    *env,
                    d.id,
                    d.name.clone(),
                    d.vendor,
                    e.base_url.clone(),
                    caps,
                    token,
                    http.clone(),
                )
                .with_file_policy(e.file_hosts.clone(), e.allow_private_addresses)
                .with_discovery(e.discovers(d.vendor), e.discover_interval_secs)
                .with_max_concurrent_kickoffs(d.max_concurrent_kickoffs)
                .with_max_retry_after(
                    settings
                        .jobs
                        .max_retry_after_secs
                        .max(super::vendors::profile(d.vendor).min_retry_after_cap_secs),
                );
                connectors.insert((d.slug.as_str().to_owned(), *env), Arc::new(connector));
            }
        }
        Ok(Registry { connectors })
    }

    /// The connector for a partner URL's slug and environment flag, if configured.
    pub fn get(&self, slug: &str, environment: &str) -> Option<Arc<Connector>> {
        let env = EnvironmentFlag::try_from(environment).ok()?;
        self.connectors.get(&(slug.to_owned(), env)).cloned()
    }

    /// The connector for already-parsed routing keys.
    pub fn lookup(&self, slug: &DestinationSlug, env: EnvironmentFlag) -> Option<Arc<Connector>> {
        self.connectors
            .get(&(slug.as_str().to_owned(), env))
            .cloned()
    }

    /// Every connector.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Connector>> {
        self.connectors.values()
    }

    pub fn len(&self) -> usize {
        self.connectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connectors.is_empty()
    }
}
