//! Registry logins for private images: the `RegistryAuth` trait, ECR's implementation
//! (`GetAuthorizationToken` through the instance role) and the anonymous one.

use std::future::Future;

use crate::error::{ErrorKind, ServiceError};

/// Credentials for a private registry, as a pull needs them.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    pub username: String,
    pub password: String,
    /// `https://{host}`.
    pub server: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RegistryCredentials({} for {})",
            self.username, self.server
        )
    }
}

/// Logs in to the registry of an image.
pub trait RegistryAuth: Send + Sync {
    /// Credentials for pulling `image`; `Ok(None)` when its registry is not one this login
    /// serves (the pull is anonymous then).
    fn credentials(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<RegistryCredentials>, ServiceError>> + Send;
}

/// No login: every pull is anonymous (`janitorctl run --local`, machines off AWS).
#[derive(Debug, Clone, Copy, Default)]
pub struct Anonymous;

impl RegistryAuth for Anonymous {
    async fn credentials(&self, _image: &str) -> Result<Option<RegistryCredentials>, ServiceError> {
        Ok(None)
    }
}

/// ECR through the SDK configuration's credentials (the instance role on EC2).
#[derive(Clone)]
pub struct EcrAuth {
    pub config: aws_config::SdkConfig,
}

impl RegistryAuth for EcrAuth {
    async fn credentials(&self, image: &str) -> Result<Option<RegistryCredentials>, ServiceError> {
        match ecr_registry(image) {
            Some(registry) => ecr_credentials(&self.config, &registry).await.map(Some),
            None => Ok(None),
        }
    }
}

/// An ECR registry named by an image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrRegistry {
    pub account: String,
    pub region: String,
    pub host: String,
}

/// `{account}.dkr.ecr.{region}.amazonaws.com[.cn]/…` → the registry; other images → `None`.
pub fn ecr_registry(image: &str) -> Option<EcrRegistry> {
    let host = image.split('/').next()?;
    if !image.contains('/') {
        return None;
    }
    let mut parts = host.split('.');
    let account = parts.next()?;
    let (dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?);
    let rest: Vec<&str> = parts.collect();
    let suffix_ok = rest == ["amazonaws", "com"] || rest == ["amazonaws", "com", "cn"];
    let ok = account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && dkr == "dkr"
        && ecr == "ecr"
        && suffix_ok
        && !region.is_empty();
    ok.then(|| EcrRegistry {
        account: account.to_string(),
        region: region.to_string(),
        host: host.to_string(),
    })
}

/// A registry login from ECR's `GetAuthorizationToken` (a base64 `AWS:password`).
pub async fn ecr_credentials(
    config: &aws_config::SdkConfig,
    registry: &EcrRegistry,
) -> Result<RegistryCredentials, ServiceError> {
    let err = |message: String| {
        ServiceError::new(
            "ECR",
            "GetAuthorizationToken",
            &registry.host,
            ErrorKind::Rejected,
            message,
        )
    };
    let conf = aws_sdk_ecr::config::Builder::from(config)
        .region(aws_config::Region::new(registry.region.clone()))
        .build();
    let out = aws_sdk_ecr::Client::from_conf(conf)
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| ServiceError::aws("ECR", "GetAuthorizationToken", &registry.host, e))?;
    let token = out
        .authorization_data()
        .first()
        .and_then(|d| d.authorization_token())
        .ok_or_else(|| err("no authorization data in the answer".to_string()))?;
    let decoded = aws_smithy_types::base64::decode(token)
        .map_err(|e| err(format!("token is not base64: {e}")))?;
    let text = String::from_utf8(decoded).map_err(|_| err("token is not text".to_string()))?;
    let (username, password) = text
        .split_once(':')
        .ok_or_else(|| err("token is not user:password".to_string()))?;
    Ok(RegistryCredentials {
        username: username.to_string(),
        password: password.to_string(),
        server: format!("https://{}", registry.host),
    })
}

/// An optional login: none means anonymous pulls.
impl<R: RegistryAuth> RegistryAuth for Option<R> {
    async fn credentials(&self, image: &str) -> Result<Option<RegistryCredentials>, ServiceError> {
        match self {
            Some(r) => r.credentials(image).await,
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_registries_are_recognised() {
        let r = ecr_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/janitor-agent:latest")
            .unwrap();
        assert_eq!(
            (r.account.as_str(), r.region.as_str()),
            ("123456789012", "us-east-1")
        );
        assert_eq!(r.host, "123456789012.dkr.ecr.us-east-1.amazonaws.com");
        assert!(ecr_registry("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/a").is_some());
        for other in [
            "janitor-agent:latest",
            "ghcr.io/org/agent:1",
            "12345.dkr.ecr.us-east-1.amazonaws.com/a",
            "123456789012.dkr.ecr.us-east-1.evil.com/a",
        ] {
            assert_eq!(ecr_registry(other), None, "{other}");
        }
    }
}
