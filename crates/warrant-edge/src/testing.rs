//! In-memory stand-ins for the services the edge is built from, for the
//! edge's own unit tests. The broker's real ones are tested through the
//! binary (crates/warrant/tests).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use warrant_core::secret::{Resolved, SecretName, SecretValue};

use crate::services::{CredentialSource, SecretUnavailable};

/// Shared secrets held in memory; signing is refused.
#[derive(Debug, Default)]
pub struct MemorySecrets {
    values: HashMap<String, Vec<u8>>,
}

impl MemorySecrets {
    /// Holds each `(name, value)`.
    pub fn with(secrets: &[(&str, &[u8])]) -> Self {
        Self {
            values: secrets
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.to_vec()))
                .collect(),
        }
    }
}

#[async_trait]
impl CredentialSource for MemorySecrets {
    async fn secret(
        &self,
        name: &SecretName,
        user: Option<&str>,
    ) -> Result<Option<Arc<Resolved>>, SecretUnavailable> {
        if user.is_some() {
            return Ok(None);
        }
        Ok(self.values.get(name.as_str()).map(|v| {
            Arc::new(Resolved {
                id: format!("{name}@v1"),
                value: SecretValue::new(v.clone()),
            })
        }))
    }

    fn sign_jwt(
        &self,
        _typ: &str,
        _claims: &serde_json::Value,
    ) -> Result<String, SecretUnavailable> {
        Err(SecretUnavailable("no signing key in tests".into()))
    }
}
