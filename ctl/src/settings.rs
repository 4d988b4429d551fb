//! janitorctl's settings: flags, then `JANITOR_*` variables, then `infra/env/<ENV>.json` (the
//! Terraform outputs `make infra-apply` writes). Each command asks only for what it needs.

use std::path::{Path, PathBuf};

/// Where `make infra-apply ENV=…` writes the outputs.
pub const ENV_DIR: &str = "infra/env";

#[derive(Debug, Clone, Default, clap::Args)]
pub struct Flags {
    /// Environment whose infra/env/<ENV>.json supplies the settings below
    #[arg(long = "env", env = "JANITOR_ENV", global = true)]
    pub env_name: Option<String>,
    /// SQS jobs queue URL
    #[arg(long, env = "JANITOR_QUEUE_URL", global = true)]
    pub queue_url: Option<String>,
    /// SQS dead-letter queue URL
    #[arg(long, env = "JANITOR_DLQ_URL", global = true)]
    pub dlq_url: Option<String>,
    /// S3 bucket of the `janitor-reports/` ledger
    #[arg(long, env = "JANITOR_BUCKET", global = true)]
    pub bucket: Option<String>,
    /// CloudWatch log group of job output
    #[arg(long, env = "JANITOR_LOG_GROUP", global = true)]
    pub log_group: Option<String>,
    /// Auto Scaling group of the GPU instances
    #[arg(long, env = "JANITOR_ASG_NAME", global = true)]
    pub asg_name: Option<String>,
    /// The pools, as JSON: `{"gpu-24": {"queue_url": …, "dlq_url": …, "asg_name": …,
    /// "instance_type": "g5.xlarge", "gpu_memory_gb": 24, "max_instances": 10}, …}`
    /// (Terraform's `pools` output); without it, one pool of queue_url and asg_name
    #[arg(long, env = "JANITOR_POOLS", global = true)]
    pub pools: Option<String>,
    /// AWS region (else AWS_REGION or the profile's)
    #[arg(long, env = "JANITOR_REGION", global = true)]
    pub region: Option<String>,
}

/// Settings after merging; each getter names what to set when the value is missing.
#[derive(Debug, Clone)]
pub struct Settings {
    flags: Flags,
    file: serde_json::Map<String, serde_json::Value>,
    file_path: Option<PathBuf>,
}

/// One line naming what is missing or wrong; exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

impl Settings {
    /// Reads `infra/env/<ENV>.json` (relative to `root`) when an environment is named.
    pub fn load(flags: Flags, root: &Path) -> Result<Settings, SettingsError> {
        let Some(env) = flags.env_name.clone().filter(|e| !e.is_empty()) else {
            return Ok(Settings {
                flags,
                file: serde_json::Map::new(),
                file_path: None,
            });
        };
        if !env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(SettingsError(format!(
                "environment name `{env}` may hold only letters, digits, `-` and `_`"
            )));
        }
        let path = root.join(ENV_DIR).join(format!("{env}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            SettingsError(format!(
                "{}: cannot read ({e}); run `make infra-apply ENV={env}` to write it, or pass the settings as flags or JANITOR_* variables",
                path.display()
            ))
        })?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            SettingsError(format!(
                "{}:{}: not valid JSON: {e}",
                path.display(),
                e.line()
            ))
        })?;
        let serde_json::Value::Object(file) = value else {
            return Err(SettingsError(format!(
                "{}: must be a JSON object of settings (Terraform outputs)",
                path.display()
            )));
        };
        Ok(Settings {
            flags,
            file,
            file_path: Some(path),
        })
    }

    /// A value from the file: a plain string, or Terraform's `{"value": "…"}`.
    fn in_file(&self, key: &str) -> Option<String> {
        let v = self.file.get(key)?;
        let v = v.get("value").unwrap_or(v);
        v.as_str().map(str::to_string).filter(|s| !s.is_empty())
    }

    fn get(&self, flag: &Option<String>, key: &str) -> Option<String> {
        flag.clone()
            .filter(|s| !s.is_empty())
            .or_else(|| self.in_file(key))
    }

    fn require(&self, flag: &Option<String>, key: &str) -> Result<String, SettingsError> {
        self.get(flag, key).ok_or_else(|| {
            let var = format!("JANITOR_{}", key.to_ascii_uppercase());
            let file = match &self.file_path {
                Some(p) => format!("add `{key}` to {}", p.display()),
                None => "or name an environment with --env (ENV=dev in the Makefile) whose infra/env/<ENV>.json has it".to_string(),
            };
            SettingsError(format!("missing setting `{key}`: pass --{}, set {var}, {file}", key.replace('_', "-")))
        })
    }

    pub fn queue_url(&self) -> Result<String, SettingsError> {
        self.require(&self.flags.queue_url, "queue_url")
    }

    pub fn bucket(&self) -> Result<String, SettingsError> {
        self.require(&self.flags.bucket, "bucket")
    }

    pub fn asg_name(&self) -> Result<String, SettingsError> {
        self.require(&self.flags.asg_name, "asg_name")
    }

    /// Optional: without it, status shows no dead-letter count.
    pub fn dlq_url(&self) -> Option<String> {
        self.get(&self.flags.dlq_url, "dlq_url")
    }

    pub fn log_group(&self) -> String {
        self.get(&self.flags.log_group, "log_group")
            .unwrap_or_else(|| janitor_model::ledger::DEFAULT_LOG_GROUP.to_string())
    }

    /// Whether pools are configured (`--pools`, `JANITOR_POOLS` or the file's `pools`).
    pub fn has_pools(&self) -> bool {
        self.flags
            .pools
            .as_deref()
            .is_some_and(|t| !t.trim().is_empty())
            || self.file.contains_key("pools")
    }

    /// The pools: `--pools`/`JANITOR_POOLS`, else the file's `pools` (Terraform's output), else
    /// one pool named `default` of `queue_url`, `asg_name` and `dlq_url`.
    pub fn pools(&self) -> Result<Vec<crate::pools::Pool>, SettingsError> {
        if let Some(text) = self.flags.pools.as_deref().filter(|t| !t.trim().is_empty()) {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                SettingsError(format!("--pools (JANITOR_POOLS): not valid JSON: {e}"))
            })?;
            return crate::pools::parse(&value, "--pools (JANITOR_POOLS)");
        }
        if let Some(v) = self.file.get("pools") {
            let v = v.get("value").unwrap_or(v);
            let at = self
                .file_path
                .as_ref()
                .map_or("pools".to_string(), |p| format!("{}: pools", p.display()));
            return crate::pools::parse(v, &at);
        }
        Ok(vec![crate::pools::Pool {
            shape: janitor_model::pools::PoolShape {
                name: crate::pools::DEFAULT_POOL.to_string(),
                instance_type: self
                    .in_file("instance_type")
                    .unwrap_or_else(|| janitor_model::pricing::DEFAULT_INSTANCE_TYPE.to_string()),
                gpu_memory_gb: None,
            },
            queue_url: self.queue_url()?,
            dlq_url: self.dlq_url(),
            asg_name: self.get(&self.flags.asg_name, "asg_name"),
            max_instances: None,
        }])
    }

    pub fn region(&self) -> Option<String> {
        self.get(&self.flags.region, "region")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_from_the_flag_or_one_default_pool_of_the_single_queue() {
        let dir = tempfile::tempdir().unwrap();
        let bad = Settings::load(
            Flags {
                pools: Some("[]".into()),
                ..Flags::default()
            },
            dir.path(),
        )
        .unwrap();
        assert!(bad.has_pools());
        let e = bad.pools().unwrap_err().to_string();
        assert!(
            e.starts_with("--pools (JANITOR_POOLS): must be an object of pools by name"),
            "{e}"
        );
        let single = Settings::load(
            Flags {
                queue_url: Some("https://q".into()),
                asg_name: Some("g".into()),
                ..Flags::default()
            },
            dir.path(),
        )
        .unwrap();
        assert!(!single.has_pools());
        let p = single.pools().unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            (
                p[0].name(),
                p[0].queue_url.as_str(),
                p[0].asg_name.as_deref()
            ),
            ("default", "https://q", Some("g"))
        );
        assert_eq!(p[0].shape.gpu_memory_gb, None, "takes every job");
    }

    #[test]
    fn flags_then_file_and_terraform_shape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join(ENV_DIR)).unwrap();
        std::fs::write(
            dir.path().join("infra/env/dev.json"),
            r#"{"queue_url": {"value": "https://q", "type": "string"}, "bucket": "b", "asg_name": ""}"#,
        )
        .unwrap();
        let flags = Flags {
            env_name: Some("dev".into()),
            bucket: Some("flag-bucket".into()),
            ..Flags::default()
        };
        let s = Settings::load(flags, dir.path()).unwrap();
        assert_eq!(s.queue_url().unwrap(), "https://q");
        assert_eq!(s.bucket().unwrap(), "flag-bucket");
        assert_eq!(s.log_group(), "/janitor-runner");
        let e = s.asg_name().unwrap_err().to_string();
        assert!(e.starts_with("missing setting `asg_name`: pass --asg-name, set JANITOR_ASG_NAME, add `asg_name` to "), "{e}");
        let e = Settings::load(
            Flags {
                env_name: Some("prod".into()),
                ..Flags::default()
            },
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("infra/env/prod.json: cannot read")
                && e.contains("make infra-apply ENV=prod"),
            "{e}"
        );
    }
}
