//! The fleet's pools as janitorctl sees them: each one's queue, dead-letter queue and Auto
//! Scaling group, read from Terraform's `pools` output (or the single-queue settings), and the
//! run's repositories routed to them.

use std::collections::BTreeMap;

use janitor_model::config::{JobSpec, WorkersConfig};
use janitor_model::ledger::SkippedRepo;
use janitor_model::pools::{self, Hints, PoolShape};

use crate::fleet::Fleet;
use crate::settings::SettingsError;
use crate::{CtlError, Ctx};

/// The name of the one pool the single-queue settings describe.
pub const DEFAULT_POOL: &str = "default";

/// A pool: its shape (for routing and prices), its queues and its group.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub shape: PoolShape,
    pub queue_url: String,
    pub dlq_url: Option<String>,
    /// `None` only for the single-queue settings without `asg_name`.
    pub asg_name: Option<String>,
    /// The group's maximum as Terraform set it (the pool's `max_instances`).
    pub max_instances: Option<u32>,
}

impl Pool {
    pub fn name(&self) -> &str {
        &self.shape.name
    }

    /// The pool's group, or the setting to give when it has none.
    pub fn fleet(&self, ctx: &Ctx) -> Result<Fleet, CtlError> {
        let name = match &self.asg_name {
            Some(n) => n.clone(),
            None => ctx.settings.asg_name()?,
        };
        Ok(Fleet {
            asg: aws_sdk_autoscaling::Client::new(&ctx.sdk),
            name,
        })
    }
}

/// Terraform's default pools, for routing only (a dry run without settings): no queue, no group.
pub fn default_list() -> Vec<Pool> {
    pools::default_pools()
        .into_iter()
        .map(|shape| Pool {
            shape,
            queue_url: String::new(),
            dlq_url: None,
            asg_name: None,
            max_instances: None,
        })
        .collect()
}

/// Reads Terraform's `pools` output: an object of pools by name.
pub fn parse(value: &serde_json::Value, at: &str) -> Result<Vec<Pool>, SettingsError> {
    let Some(map) = value.as_object().filter(|m| !m.is_empty()) else {
        return Err(SettingsError(format!(
            "{at}: must be an object of pools by name, such as {{\"gpu-24\": {{\"queue_url\": …, \"asg_name\": …, \"instance_type\": \"g5.xlarge\", \"gpu_memory_gb\": 24}}}}"
        )));
    };
    let mut out = Vec::new();
    for (name, p) in map {
        janitor_model::names::check_pool(name).map_err(|e| SettingsError(format!("{at}: {e}")))?;
        let text = |key: &str| {
            p.get(key)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let need = |key: &str| {
            text(key).ok_or_else(|| {
                SettingsError(format!("{at}.{name}.{key}: missing (a non-empty string)"))
            })
        };
        let gpu = p
            .get("gpu_memory_gb")
            .and_then(serde_json::Value::as_u64)
            .and_then(|g| u32::try_from(g).ok())
            .ok_or_else(|| {
                SettingsError(format!(
                    "{at}.{name}.gpu_memory_gb: missing (a whole number of GB per GPU, 0 for none)"
                ))
            })?;
        out.push(Pool {
            shape: PoolShape {
                name: name.clone(),
                instance_type: need("instance_type")?,
                gpu_memory_gb: Some(gpu),
            },
            queue_url: need("queue_url")?,
            dlq_url: text("dlq_url"),
            asg_name: Some(need("asg_name")?),
            max_instances: p
                .get("max_instances")
                .and_then(serde_json::Value::as_u64)
                .and_then(|m| u32::try_from(m).ok()),
        });
    }
    Ok(out)
}

/// One repository's place: its index in the config and its pool (an index into the pools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub index: usize,
    pub pool: usize,
    pub why: String,
}

/// The run's repositories by pool, and those no pool can run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub placed: Vec<Placed>,
    pub not_run: Vec<SkippedRepo>,
}

impl Plan {
    /// How many jobs each pool gets, by pool index.
    pub fn counts(&self) -> BTreeMap<usize, usize> {
        let mut c = BTreeMap::new();
        for p in &self.placed {
            *c.entry(p.pool).or_default() += 1;
        }
        c
    }
}

/// Routes every repository of `cfg`; `hints` by `org/name` (none: routed by its config).
pub fn plan(cfg: &WorkersConfig, hints: &BTreeMap<String, Hints>, pools: &[Pool]) -> Plan {
    let shapes: Vec<PoolShape> = pools.iter().map(|p| p.shape.clone()).collect();
    let none = Hints::default();
    let mut out = Plan::default();
    for (index, spec) in cfg.repositories.iter().enumerate() {
        let h = hints.get(&spec.repo.full_name()).unwrap_or(&none);
        match pools::route(spec, h, &shapes) {
            Ok(r) => out.placed.push(Placed {
                index,
                pool: shapes.iter().position(|s| s.name == r.pool).unwrap_or(0),
                why: r.why,
            }),
            Err(reason) => out.not_run.push(SkippedRepo {
                name: spec.repo.full_name(),
                reason,
            }),
        }
    }
    out
}

/// Whether routing needs the repository's files: more than one pool, and nothing in its entry
/// that decides.
pub fn needs_hints(spec: &JobSpec, pools: &[Pool]) -> bool {
    pools.len() > 1 && spec.pool.is_none() && spec.instance_type.is_none() && spec.gpu_required
}

/// The files routing reads, in the order they are read.
pub const HINT_FILES: &[&str] = &[
    janitor_model::runpod::HUB_FILE,
    janitor_model::runpod::HUB_TESTS,
    janitor_model::runpod::RUNNER_TESTS,
];

/// The routing hints of a repository on this machine (a `file://` or path URL): its files
/// at the ref it will be cloned at.
pub async fn local_hints(url: &str, git_ref: Option<&str>) -> Hints {
    let dir = url.strip_prefix("file://").unwrap_or(url);
    Hints::from_files(&crate::local::read_files(dir, git_ref.unwrap_or("HEAD"), HINT_FILES).await)
}

/// The routing hints of every repository that needs them: read from GitHub's contents API
/// (`known`: the paths a tree listing already found, so absent files cost no call), or from
/// the local repository. A file that cannot be read leaves the repository routed by its
/// config, and says why.
pub async fn gather_hints(
    cfg: &WorkersConfig,
    pools: &[Pool],
    gh: Option<&janitor_services::github::GitHub>,
    known: &BTreeMap<String, Vec<String>>,
) -> BTreeMap<String, Hints> {
    use futures_util::StreamExt;
    let wanted: Vec<&JobSpec> = cfg
        .repositories
        .iter()
        .filter(|s| needs_hints(s, pools))
        .collect();
    futures_util::stream::iter(wanted)
        .map(|spec| async move {
            let name = spec.repo.full_name();
            let url = spec.repo.clone_url();
            if !url.starts_with("https://github.com/") {
                if url.contains("://") && !url.starts_with("file://") {
                    return (name, Hints::default());
                }
                return (name, local_hints(&url, spec.repo.git_ref.as_deref()).await);
            }
            let Some(gh) = gh else {
                return (name, Hints::default());
            };
            let mut files = Vec::new();
            let mut unread = None;
            for f in HINT_FILES {
                if known
                    .get(&name)
                    .is_some_and(|paths| !paths.iter().any(|p| p == f))
                {
                    continue;
                }
                match gh
                    .file_text(
                        &spec.repo.organization,
                        &spec.repo.name,
                        f,
                        spec.repo.git_ref.as_deref(),
                    )
                    .await
                {
                    Ok(Some(text)) => files.push((f.to_string(), text)),
                    Ok(None) => {}
                    Err(e) => {
                        unread = Some(e.message);
                        break;
                    }
                }
            }
            let mut h = Hints::from_files(&files);
            if let Some(e) = unread {
                h.unread = Some(e);
            }
            (name, h)
        })
        .buffer_unordered(8)
        .collect()
        .await
}

/// The run's cost estimate, each job priced at its own `instance_type:` or its pool's.
pub fn estimate(cfg: &WorkersConfig, pools: &[Pool], plan: &Plan) -> crate::estimate::Estimate {
    let named = pools.len() > 1 || pools.first().is_some_and(|p| p.name() != DEFAULT_POOL);
    crate::estimate::estimate_jobs(plan.placed.iter().filter_map(|p| {
        let spec = cfg.repositories.get(p.index)?;
        let pool = pools.get(p.pool)?;
        Some((
            named.then_some(pool.name()),
            spec.instance_type
                .as_deref()
                .unwrap_or(pool.shape.instance_type.as_str()),
            spec.timeout.as_secs(),
        ))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terraforms_output_is_read_and_a_missing_field_is_named() {
        let v = serde_json::json!({
            "cpu": {"queue_url": "https://q/cpu", "asg_name": "janitor-dev-cpu", "instance_type": "c7i.xlarge", "gpu_memory_gb": 0, "max_instances": 4},
            "gpu-24": {"queue_url": "https://q/24", "dlq_url": "https://q/24-dlq", "asg_name": "janitor-dev-gpu-24", "instance_type": "g5.xlarge", "gpu_memory_gb": 24}
        });
        let p = parse(&v, "pools").unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name(), "cpu");
        assert_eq!(p[0].max_instances, Some(4));
        assert_eq!(p[1].shape.gpu_memory_gb, Some(24));
        assert_eq!(p[1].dlq_url.as_deref(), Some("https://q/24-dlq"));
        let bad = serde_json::json!({"gpu-48": {"queue_url": "q", "asg_name": "a", "instance_type": "g6e.xlarge"}});
        let e = parse(&bad, "infra/env/dev.json: pools")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "infra/env/dev.json: pools.gpu-48.gpu_memory_gb: missing (a whole number of GB per GPU, 0 for none)");
        let e = parse(&serde_json::json!([]), "--pools")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--pools: must be an object of pools by name"),
            "{e}"
        );
    }
}
