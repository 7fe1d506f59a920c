//! `(slug, environment) → connector`, built once at boot from the settings.

use super::{Connector, http::UpstreamClient, profile_capabilities};
use crate::config::{ConfigError, Settings};
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
                let token = match secrets {
                    Secrets::Resolve => e.auth.resolve(&key)?,
                    Secrets::Skip => None,
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
                .with_max_concurrent_kickoffs(d.max_concurrent_kickoffs);
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

    pub fn len(&self) -> usize {
        self.connectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connectors.is_empty()
    }
}
