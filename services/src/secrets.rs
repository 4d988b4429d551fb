//! Job secrets, fetched when a job starts from AWS Secrets Manager (`GetSecretValue`) or SSM
//! Parameter Store (`GetParameter` with decryption), and held only in memory: `SecretValues`
//! never prints a value, and redacts them from any text.

use std::future::Future;

use janitor_model::config::{parse_secret_ref, SecretRef};

use crate::error::{ErrorKind, ServiceError};

/// Values shorter than this are not redacted (they would blank out ordinary text); every
/// real token is longer.
pub const MIN_REDACTED_LEN: usize = 4;

/// A job's secrets: environment name → value.
#[derive(Clone, Default)]
pub struct SecretValues(Vec<(String, String)>);

impl std::fmt::Debug for SecretValues {
    /// Names only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

impl SecretValues {
    pub fn new(values: Vec<(String, String)>) -> Self {
        SecretValues(values)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `NAME=value` for a container's environment.
    pub fn env(&self) -> Vec<String> {
        self.0.iter().map(|(n, v)| format!("{n}={v}")).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every value (and any extra `also`) replaced by `***`.
    pub fn redact(&self, text: &str, also: &[String]) -> String {
        let mut out = text.to_string();
        for v in self.0.iter().map(|(_, v)| v).chain(also) {
            if v.len() >= MIN_REDACTED_LEN && out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "***");
            }
        }
        out
    }
}

/// Where secret values come from.
pub trait SecretSource: Send + Sync {
    fn fetch(
        &self,
        reference: &SecretRef,
    ) -> impl Future<Output = Result<String, ServiceError>> + Send;
}

/// Secrets Manager and SSM.
#[derive(Clone)]
pub struct AwsSecrets {
    pub secrets_manager: aws_sdk_secretsmanager::Client,
    pub ssm: aws_sdk_ssm::Client,
}

impl AwsSecrets {
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        AwsSecrets {
            secrets_manager: aws_sdk_secretsmanager::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
        }
    }
}

impl SecretSource for AwsSecrets {
    async fn fetch(&self, reference: &SecretRef) -> Result<String, ServiceError> {
        match reference {
            SecretRef::SecretsManager(name) => {
                let out = self
                    .secrets_manager
                    .get_secret_value()
                    .secret_id(name)
                    .send()
                    .await
                    .map_err(|e| {
                        ServiceError::aws("Secrets Manager", "GetSecretValue", name.clone(), e)
                    })?;
                out.secret_string().map(str::to_string).ok_or_else(|| {
                    ServiceError::new(
                        "Secrets Manager",
                        "GetSecretValue",
                        name.clone(),
                        ErrorKind::Rejected,
                        "the secret has no string value (a binary secret cannot be an environment variable)",
                    )
                })
            }
            SecretRef::Ssm(name) => {
                let out = self
                    .ssm
                    .get_parameter()
                    .name(name)
                    .with_decryption(true)
                    .send()
                    .await
                    .map_err(|e| ServiceError::aws("SSM", "GetParameter", name.clone(), e))?;
                out.parameter()
                    .and_then(|p| p.value())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        ServiceError::new(
                            "SSM",
                            "GetParameter",
                            name.clone(),
                            ErrorKind::NotFound,
                            "no value",
                        )
                    })
            }
        }
    }
}

/// Fetches every secret of a job; the first that cannot be had is a sentence naming it.
pub async fn resolve<S: SecretSource>(
    source: &S,
    secrets: &[(String, String)],
) -> Result<SecretValues, String> {
    let mut values = Vec::with_capacity(secrets.len());
    for (name, reference) in secrets {
        let parsed = parse_secret_ref(reference).map_err(|e| format!("secret `{name}`: {e}"))?;
        let value = source
            .fetch(&parsed)
            .await
            .map_err(|e| format!("secret `{name}` ({reference}) could not be read: {e}"))?;
        values.push((name.clone(), value));
    }
    Ok(SecretValues(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_redacted_and_never_printed() {
        let s = SecretValues::new(vec![
            ("GITHUB_TOKEN".into(), "ghp_abcdef123456".into()),
            ("TINY".into(), "ab".into()),
        ]);
        assert_eq!(
            s.redact("push with ghp_abcdef123456 to ab", &["hf_zz99".into()]),
            "push with *** to ab"
        );
        assert_eq!(s.redact("hf_zz99!", &["hf_zz99".into()]), "***!");
        let shown = format!("{s:?}");
        assert!(
            shown.contains("GITHUB_TOKEN") && !shown.contains("ghp_"),
            "{shown}"
        );
        assert_eq!(s.get("GITHUB_TOKEN"), Some("ghp_abcdef123456"));
    }
}
