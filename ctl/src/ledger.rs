//! Reading the S3 ledger back: runs, their jobs' states, repository history.

use std::collections::BTreeMap;

use janitor_model::ledger::{self, RejectedRecord, RunManifest, StartedRecord};
use janitor_model::report::{JobStatus, Report, TestsReport};
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;

use janitor_services::aws::ReportStore;
use janitor_services::error::ServiceError;

use crate::CtlError;

/// How far back `status` looks for the latest run before it lists every run.
pub const RECENT_DAYS: i64 = 14;

/// How many days of `rejected/` a run's view reads.
pub const REJECTED_DAYS: usize = 14;

pub struct Ledger {
    pub s3: aws_sdk_s3::Client,
    pub bucket: String,
}

/// Where a job is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Finished,
}

/// One job of a run, as the ledger tells it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub job_id: String,
    pub repository: String,
    pub prompt: String,
    /// The pool whose queue it was sent to (runs before pools have none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    pub state: JobState,
    /// The final status when finished; `interrupted` while a retry is awaited.
    pub status: Option<JobStatus>,
    pub attempt: u32,
    pub instance_id: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub duration_seconds: Option<f64>,
    pub reason: Option<String>,
    /// The worker's tests and their results, from the report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestsReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
}

impl JobView {
    /// A finished job from its report (a local run's, which has no ledger).
    pub fn finished(report: &Report) -> JobView {
        JobView {
            job_id: report.job_id.clone(),
            repository: report.repo.full_name(),
            prompt: report.prompt.clone(),
            pool: None,
            state: JobState::Finished,
            status: Some(report.status),
            attempt: report.attempt,
            instance_id: Some(report.instance.id.clone()),
            started_at: Some(report.timings.started_at),
            finished_at: Some(report.timings.finished_at),
            duration_seconds: Some(report.timings.duration_seconds),
            reason: report.reason.clone(),
            tests: report.tests.clone(),
            report: Some(report.clone()),
        }
    }

    pub fn name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub run_id: String,
    pub config_path: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// The longest job timeout times the number of waves the instance limit forces.
    pub timeout_seconds: u64,
    pub max_concurrent_instances: u32,
    pub estimated_cost_usd: Option<f64>,
    pub jobs: Vec<JobView>,
    /// Repositories no pool could run (not enqueued), and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_run: Vec<janitor_model::ledger::SkippedRepo>,
}

impl RunView {
    pub fn count(&self, state: JobState) -> usize {
        self.jobs.iter().filter(|j| j.state == state).count()
    }

    pub fn succeeded(&self) -> usize {
        self.jobs
            .iter()
            .filter(|j| j.status.is_some_and(JobStatus::is_ok) && j.state == JobState::Finished)
            .count()
    }

    pub fn is_done(&self) -> bool {
        self.jobs.iter().all(|j| j.state == JobState::Finished)
    }

    pub fn deadline(&self) -> OffsetDateTime {
        self.created_at
            + time::Duration::seconds(i64::try_from(self.timeout_seconds).unwrap_or(i64::MAX / 2))
    }

    /// When the last job finished, if all have.
    pub fn finished_at(&self) -> Option<OffsetDateTime> {
        if !self.is_done() {
            return None;
        }
        self.jobs.iter().filter_map(|j| j.finished_at).max()
    }
}

/// The run's timeout: the longest job timeout times the waves `max_concurrent_instances`
/// forces, counted in each pool on its own instances (the longest pool's), or over all jobs
/// for a run from before pools.
pub fn run_timeout_seconds(manifest: &RunManifest) -> u64 {
    let waves = |jobs: &[&janitor_model::ledger::ManifestJob], per_wave: u32| {
        let longest = jobs.iter().map(|j| j.timeout_seconds).max().unwrap_or(0);
        longest
            * (jobs.len() as u64)
                .div_ceil(u64::from(per_wave.max(1)))
                .max(1)
    };
    let all: Vec<&janitor_model::ledger::ManifestJob> = manifest.jobs.iter().collect();
    if manifest.pool_instances.is_empty() {
        return waves(&all, manifest.max_concurrent_instances);
    }
    let mut pools: BTreeMap<&str, Vec<&janitor_model::ledger::ManifestJob>> = BTreeMap::new();
    for j in &manifest.jobs {
        pools
            .entry(j.pool.as_deref().unwrap_or(""))
            .or_default()
            .push(j);
    }
    pools
        .iter()
        .map(|(p, jobs)| {
            let cap = manifest
                .pool_instances
                .get(*p)
                .copied()
                .unwrap_or(manifest.max_concurrent_instances);
            waves(jobs, cap)
        })
        .max()
        .unwrap_or(0)
}

impl Ledger {
    fn aws<E, R>(
        &self,
        action: &'static str,
        key: &str,
    ) -> impl FnOnce(aws_sdk_s3::error::SdkError<E, R>) -> CtlError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + janitor_services::error::HasStatus,
    {
        let target = format!("s3://{}/{key}", self.bucket);
        move |e| CtlError::Service {
            context: "reading the ledger".to_string(),
            source: ServiceError::aws("S3", action, target, e),
        }
    }

    /// Every key under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, CtlError> {
        self.list(prefix, None).await
    }

    /// The "folders" directly under `prefix`, without it and the trailing slash.
    pub async fn folders(&self, prefix: &str) -> Result<Vec<String>, CtlError> {
        self.folders_after(prefix, None).await
    }

    /// The folders under `prefix` that sort after `start_after` (a full key).
    pub async fn folders_after(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<String>, CtlError> {
        let mut out = Vec::new();
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            .set_start_after(start_after.map(str::to_string))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(self.aws("ListObjectsV2", prefix))?;
            out.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix())
                    .map(|p| {
                        p.trim_start_matches(prefix)
                            .trim_end_matches('/')
                            .to_string()
                    }),
            );
        }
        Ok(out)
    }

    /// A JSON document, `None` when the key does not exist.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CtlError> {
        let Some(bytes) = self.get_bytes(key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CtlError::Document {
                key: format!("s3://{}/{key}", self.bucket),
                reason: e.to_string(),
            })
    }

    /// An object's bytes, `None` when the key does not exist.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, CtlError> {
        let out = match self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                    return Ok(None);
                }
                return Err(self.aws("GetObject", key)(e));
            }
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| CtlError::Document {
                key: format!("s3://{}/{key}", self.bucket),
                reason: format!("cannot read its body: {e}"),
            })?
            .into_bytes();
        Ok(Some(bytes.to_vec()))
    }

    pub async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), CtlError> {
        let body = serde_json::to_vec_pretty(value).map_err(|e| CtlError::Document {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        // The same write the daemon makes.
        let store = janitor_services::aws::S3Store {
            client: self.s3.clone(),
            bucket: self.bucket.clone(),
        };
        store
            .put_json(key, body)
            .await
            .map_err(CtlError::service("writing the ledger"))
    }

    /// Writes the run's page beside its manifest (`runs/{run}/index.html`) and returns a
    /// presigned link to it, valid for `expiry`.
    pub async fn put_page(
        &self,
        run_id: &str,
        html: String,
        expiry: std::time::Duration,
    ) -> Result<String, CtlError> {
        let key = format!("{}runs/{run_id}/index.html", ledger::PREFIX);
        self.s3
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type("text/html; charset=utf-8")
            .body(html.into_bytes().into())
            .send()
            .await
            .map_err(|e| {
                CtlError::Usage(format!("cannot write s3://{}/{key}: {e}", self.bucket))
            })?;
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(expiry)
            .map_err(|e| CtlError::Usage(format!("--page-expiry-days: {e}")))?;
        let presigned = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .presigned(config)
            .await
            .map_err(|e| {
                CtlError::Usage(format!("cannot presign s3://{}/{key}: {e}", self.bucket))
            })?;
        Ok(presigned.uri().to_string())
    }

    /// Run ids, oldest first (they start with their UTC time).
    pub async fn run_ids(&self) -> Result<Vec<String>, CtlError> {
        let mut ids = self.folders(&ledger::runs_prefix()).await?;
        ids.sort();
        Ok(ids)
    }

    /// The given run (checked to exist), or the latest.
    pub async fn resolve_run(&self, run_id: Option<&str>) -> Result<String, CtlError> {
        match run_id {
            Some(id) => {
                if self
                    .get::<serde_json::Value>(&ledger::manifest_key(id))
                    .await?
                    .is_none()
                {
                    let latest = self
                        .latest_run()
                        .await?
                        .map_or("there are no runs yet".to_string(), |l| {
                            format!("the latest is {l}")
                        });
                    return Err(CtlError::NotFound(format!(
                        "no run `{id}` in s3://{}/{}runs/ ({latest})",
                        self.bucket,
                        ledger::PREFIX
                    )));
                }
                Ok(id.to_string())
            }
            None => self.latest_run().await?.ok_or_else(|| {
                CtlError::NotFound(format!(
                    "no runs in s3://{}/{}runs/ yet: start one with `janitorctl run FILE`",
                    self.bucket,
                    ledger::PREFIX
                ))
            }),
        }
    }

    /// The newest run with a manifest (a folder without one is not a run: only `janitorctl`
    /// writes manifests). Ids sort by their second; runs started within the same second are
    /// told apart by their manifests' exact creation time.
    pub async fn latest_run(&self) -> Result<Option<String>, CtlError> {
        // Run ids start with their time: the last RECENT_DAYS are listed first, so `status`
        // does not read every run ever made; the whole listing is the fallback.
        let recent = self.recent_run_ids().await?;
        if let Some(id) = self.newest_with_manifest(&recent).await? {
            return Ok(Some(id));
        }
        let all = self.run_ids().await?;
        self.newest_with_manifest(&all).await
    }

    /// Run ids of the last [`RECENT_DAYS`], oldest first.
    pub async fn recent_run_ids(&self) -> Result<Vec<String>, CtlError> {
        let from = OffsetDateTime::now_utc() - time::Duration::days(RECENT_DAYS);
        let start = format!("{}{}", ledger::runs_prefix(), ledger::compact_time(from));
        let mut ids = self
            .folders_after(&ledger::runs_prefix(), Some(&start))
            .await?;
        ids.sort();
        Ok(ids)
    }

    async fn newest_with_manifest(&self, ids: &[String]) -> Result<Option<String>, CtlError> {
        let mut second: Option<String> = None;
        let mut best: Option<(OffsetDateTime, String)> = None;
        for id in ids.iter().rev() {
            let this_second = id.split('-').next().unwrap_or(id);
            if second.as_deref().is_some_and(|s| s != this_second) {
                break;
            }
            let Some(m) = self.get::<RunManifest>(&ledger::manifest_key(id)).await? else {
                continue;
            };
            second = Some(this_second.to_string());
            if best.as_ref().is_none_or(|(t, _)| m.created_at > *t) {
                best = Some((m.created_at, id.clone()));
            }
        }
        Ok(best.map(|(_, id)| id))
    }

    /// Refusals that name `run_id`, from `rejected/{day}/` for each day since the run was
    /// created (at most [`REJECTED_DAYS`]), by job id.
    pub async fn rejections(
        &self,
        run_id: &str,
        since: OffsetDateTime,
    ) -> Result<BTreeMap<String, RejectedRecord>, CtlError> {
        let mut out = BTreeMap::new();
        let today = OffsetDateTime::now_utc();
        let mut day = since;
        for _ in 0..REJECTED_DAYS {
            for key in self.keys(&ledger::rejected_day_prefix(day)).await? {
                if let Some(r) = self.get::<RejectedRecord>(&key).await? {
                    if r.run_id.as_deref() == Some(run_id) {
                        if let Some(job) = r.job_id.clone() {
                            out.insert(job, r);
                        }
                    }
                }
            }
            if day.date() >= today.date() {
                break;
            }
            day += time::Duration::days(1);
        }
        Ok(out)
    }

    pub async fn manifest(&self, run_id: &str) -> Result<RunManifest, CtlError> {
        self.get(&ledger::manifest_key(run_id))
            .await?
            .ok_or_else(|| {
                CtlError::NotFound(format!(
                    "no run `{run_id}`: s3://{}/{} does not exist",
                    self.bucket,
                    ledger::manifest_key(run_id)
                ))
            })
    }

    /// The run with every job's state, read from one listing plus the documents it names.
    pub async fn run_view(&self, run_id: &str) -> Result<RunView, CtlError> {
        let manifest = self.manifest(run_id).await?;
        let jobs_prefix = ledger::jobs_prefix(run_id);
        let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for key in self.keys(&jobs_prefix).await? {
            if let Some((job, file)) = key.trim_start_matches(&jobs_prefix).split_once('/') {
                files
                    .entry(job.to_string())
                    .or_default()
                    .push(file.to_string());
            }
        }
        let unreported = manifest.jobs.iter().any(|j| {
            !files
                .get(&j.job_id)
                .is_some_and(|f| f.iter().any(|f| f == "report.json"))
        });
        let rejections = if unreported {
            self.rejections(run_id, manifest.created_at).await?
        } else {
            BTreeMap::new()
        };
        let mut jobs = Vec::new();
        for mj in &manifest.jobs {
            let have = files.get(&mj.job_id).cloned().unwrap_or_default();
            let latest_start = have
                .iter()
                .filter_map(|f| {
                    f.strip_prefix("started-")
                        .and_then(|r| r.strip_suffix(".json"))
                        .and_then(|n| n.parse::<u32>().ok())
                })
                .max();
            let mut view = JobView {
                job_id: mj.job_id.clone(),
                repository: mj.repository.clone(),
                prompt: mj.prompt.clone(),
                pool: mj.pool.clone(),
                state: JobState::Queued,
                status: None,
                attempt: latest_start.unwrap_or(0),
                instance_id: None,
                started_at: None,
                finished_at: None,
                duration_seconds: None,
                reason: None,
                tests: None,
                report: None,
            };
            let report: Option<Report> = if have.iter().any(|f| f == "report.json") {
                self.get(&ledger::report_key(run_id, &mj.job_id)).await?
            } else {
                None
            };
            let started: Option<StartedRecord> = match latest_start {
                Some(n) => {
                    self.get(&ledger::started_key(run_id, &mj.job_id, n))
                        .await?
                }
                None => None,
            };
            if let Some(r) = report {
                view.status = Some(r.status);
                view.reason = r.reason.clone();
                view.tests = r.tests.clone();
                view.instance_id = Some(r.instance.id.clone());
                view.started_at = Some(r.timings.started_at);
                view.finished_at = Some(r.timings.finished_at);
                view.duration_seconds = Some(r.timings.duration_seconds);
                let retried = latest_start.is_some_and(|n| n > r.attempt);
                view.state = match (r.status, retried) {
                    // A newer attempt has started: an interrupted or errored job is being retried.
                    (JobStatus::Interrupted | JobStatus::Error, true) => JobState::Running,
                    (JobStatus::Interrupted, false) => JobState::Queued,
                    _ => JobState::Finished,
                };
                view.report = Some(r);
            } else if let Some(rej) = rejections.get(&mj.job_id) {
                view.state = JobState::Finished;
                view.status = Some(JobStatus::Rejected);
                view.reason = Some(rej.reason.clone());
            } else if have.iter().any(|f| f == "rejected.json") {
                // Recorded by a daemon from before the `rejected/{day}/` layout.
                let rej: Option<RejectedRecord> = self
                    .get(&ledger::job_rejected_key(run_id, &mj.job_id))
                    .await?;
                view.state = JobState::Finished;
                view.status = Some(JobStatus::Rejected);
                view.reason = rej.map(|r| r.reason);
            } else if started.is_some() {
                view.state = JobState::Running;
            }
            if view.state == JobState::Running {
                if let Some(s) = &started {
                    view.instance_id = Some(s.instance.id.clone());
                    view.started_at = Some(s.started_at);
                    view.finished_at = None;
                }
            }
            jobs.push(view);
        }
        Ok(RunView {
            run_id: run_id.to_string(),
            config_path: manifest.config_path.clone(),
            created_by: manifest.created_by.clone(),
            created_at: manifest.created_at,
            timeout_seconds: run_timeout_seconds(&manifest),
            max_concurrent_instances: manifest.max_concurrent_instances,
            estimated_cost_usd: manifest.estimated_cost_usd,
            jobs,
            not_run: manifest.not_run.clone(),
        })
    }

    /// A repository's reports, newest first. `repo` is `org/name` or just `name`.
    /// A repository's reports, newest first, at most `limit`, from runs started at or after
    /// `since` when given. `repo` is `org/name` or just `name`.
    pub async fn history(
        &self,
        repo: &str,
        limit: usize,
        since: Option<OffsetDateTime>,
    ) -> Result<Vec<Report>, CtlError> {
        let base = ledger::repos_prefix();
        let prefixes: Vec<String> = match repo.split_once('/') {
            Some((org, name)) => vec![ledger::repo_history_prefix(org, name)],
            None => self
                .folders(&base)
                .await?
                .into_iter()
                .map(|org| ledger::repo_history_prefix(&org, repo))
                .collect(),
        };
        // Keys list newest first (see `repo_history_key`): the first `limit` of each prefix are
        // all that can be among the newest `limit`, so no listing reads the whole history.
        let mut keys = Vec::new();
        for p in prefixes {
            keys.extend(self.first_keys(&p, limit).await?.into_iter().map(|k| {
                let file = k.rsplit('/').next().unwrap_or("").to_string();
                (file, k)
            }));
        }
        keys.sort();
        // Keys name their run, and the run id starts with its time: older runs are left out
        // without reading them.
        keys.retain(|(_, k)| {
            since.is_none_or(|since| {
                ledger::run_id_of_history_key(k)
                    .and_then(ledger::parse_compact_time)
                    .is_none_or(|t| t >= since)
            })
        });
        let mut out = Vec::new();
        for (_, key) in keys.into_iter().take(limit) {
            if let Some(r) = self.get::<Report>(&key).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The first `n` keys under `prefix`, in S3's (ascending) order.
    pub async fn first_keys(&self, prefix: &str, n: usize) -> Result<Vec<String>, CtlError> {
        self.list(prefix, Some(n)).await
    }

    /// Keys under `prefix` in S3's order: all of them, or the first `limit`.
    async fn list(&self, prefix: &str, limit: Option<usize>) -> Result<Vec<String>, CtlError> {
        let mut keys = Vec::new();
        let page_size = limit.map(|n| i32::try_from(n.clamp(1, 1000)).unwrap_or(1000));
        let mut pages = self
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_max_keys(page_size)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(self.aws("ListObjectsV2", prefix))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            if limit.is_some_and(|n| keys.len() >= n) {
                break;
            }
        }
        if let Some(n) = limit {
            keys.truncate(n);
        }
        Ok(keys)
    }

    /// The run id a job belongs to, searching the newest runs first.
    pub async fn find_job(&self, job_id: &str, search: usize) -> Result<String, CtlError> {
        for run in self.run_ids().await?.into_iter().rev().take(search) {
            let prefix = ledger::job_prefix(&run, job_id);
            let found = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&prefix)
                .max_keys(1)
                .send()
                .await
                .map_err(self.aws("ListObjectsV2", &prefix))?;
            if found.key_count().unwrap_or(0) > 0 {
                return Ok(run);
            }
            // A folder without a manifest is not a run.
            let Some(manifest) = self.get::<RunManifest>(&ledger::manifest_key(&run)).await? else {
                continue;
            };
            if manifest.jobs.iter().any(|j| j.job_id == job_id) {
                return Ok(run);
            }
        }
        Err(CtlError::NotFound(format!(
            "no job `{job_id}` in the latest {search} runs of s3://{}/{}runs/ (pass --run RUN_ID)",
            self.bucket,
            ledger::PREFIX
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::tests::report;
    use janitor_model::ledger::ManifestJob;
    use janitor_model::report::InstanceInfo;
    use janitor_testkit::Fixture;

    #[test]
    fn the_runs_timeout_counts_waves_in_each_pool() {
        let mut m = manifest("r", &["a", "b", "c", "d", "e", "f"]);
        // Before pools: 6 jobs, 2 at a time, 600 s each: 3 waves.
        assert_eq!(run_timeout_seconds(&m), 1800);
        // Five on a pool of one instance, one on another: the first pool's five waves.
        for (i, j) in m.jobs.iter_mut().enumerate() {
            j.pool = Some(if i < 5 { "gpu-48" } else { "cpu" }.to_string());
        }
        m.pool_instances = [("gpu-48".to_string(), 1), ("cpu".to_string(), 2)].into();
        assert_eq!(run_timeout_seconds(&m), 3000);
    }

    fn manifest(run_id: &str, jobs: &[&str]) -> RunManifest {
        RunManifest {
            schema: 1,
            run_id: run_id.into(),
            config_path: "infra/workers-config.yaml".into(),
            created_by: "t@h".into(),
            created_at: OffsetDateTime::now_utc(),
            max_concurrent_instances: 2,
            jobs: jobs
                .iter()
                .map(|j| ManifestJob {
                    job_id: format!("{j}-1"),
                    repository: format!("runpod-workers/{j}"),
                    prompt: "check".into(),
                    gpu_required: true,
                    timeout_seconds: 600,
                    instance_type: None,
                    ..ManifestJob::default()
                })
                .collect(),
            estimated_cost_usd: Some(0.5),
            discovery: None,
            not_run: Vec::new(),
            pool_instances: BTreeMap::new(),
        }
    }

    fn started(run_id: &str, job_id: &str, attempt: u32) -> StartedRecord {
        StartedRecord {
            job_id: job_id.into(),
            run_id: run_id.into(),
            attempt,
            instance: InstanceInfo {
                id: "i-0abc".into(),
                instance_type: "g5.xlarge".into(),
                availability_zone: "us-east-1a".into(),
                lifecycle: "on-demand".into(),
            },
            started_at: OffsetDateTime::now_utc(),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn run_views_history_and_errors_read_from_moto() {
        let fx = Fixture::start(&[]).await;
        let l = Ledger {
            s3: fx.s3(),
            bucket: fx.bucket.clone(),
        };
        let run = "20261201T000000Z-led001";
        let names = ["queued", "running", "done", "retrying", "refused"];
        l.put(&ledger::manifest_key(run), &manifest(run, &names))
            .await
            .unwrap();
        for (job, attempt) in [("running-1", 1), ("done-1", 1), ("retrying-1", 2)] {
            l.put(
                &ledger::started_key(run, job, attempt),
                &started(run, job, attempt),
            )
            .await
            .unwrap();
        }
        let mut done = report("done", JobStatus::Failed, 12.0, "run: exited with code 1");
        done.run_id = run.into();
        l.put(&ledger::report_key(run, "done-1"), &done)
            .await
            .unwrap();
        let mut interrupted = report("retrying", JobStatus::Interrupted, 3.0, "spot");
        interrupted.run_id = run.into();
        interrupted.job_id = "retrying-1".into();
        l.put(&ledger::report_key(run, "retrying-1"), &interrupted)
            .await
            .unwrap();
        let rejected = RejectedRecord {
            message_id: "m1".into(),
            run_id: Some(run.into()),
            job_id: Some("refused-1".into()),
            reason: "schema 9 is not known".into(),
            receive_count: 1,
            instance_id: "i-0abc".into(),
            at: OffsetDateTime::now_utc(),
            body_head: "{}".into(),
        };
        l.put(
            &ledger::rejected_key(OffsetDateTime::now_utc(), "m1"),
            &rejected,
        )
        .await
        .unwrap();
        // A made-up run id in a refused message leaves no folder; a folder without a manifest
        // (written by hand, or by an older daemon) is not taken for the latest run.
        l.put(
            &ledger::job_rejected_key("29991231T235959Z-zzzzzz", "x-1"),
            &rejected,
        )
        .await
        .unwrap();

        let view = l.run_view(run).await.unwrap();
        let states: Vec<(&str, JobState, Option<JobStatus>)> = view
            .jobs
            .iter()
            .map(|j| (j.name(), j.state, j.status))
            .collect();
        assert_eq!(
            states,
            [
                ("queued", JobState::Queued, None),
                ("running", JobState::Running, None),
                ("done", JobState::Finished, Some(JobStatus::Failed)),
                ("retrying", JobState::Running, Some(JobStatus::Interrupted)),
                ("refused", JobState::Finished, Some(JobStatus::Rejected)),
            ]
        );
        assert_eq!(
            view.jobs[4].reason.as_deref(),
            Some("schema 9 is not known")
        );
        assert_eq!(
            view.jobs[3].attempt, 2,
            "the newer attempt is the one shown"
        );
        assert!(!view.is_done());
        assert_eq!(view.timeout_seconds, 600 * 3, "5 jobs in waves of 2");

        // History: newest first, limited, by name or org/name.
        for (i, run) in [
            "20261101T000000Z-aaaaaa",
            "20261103T000000Z-cccccc",
            "20261102T000000Z-bbbbbb",
        ]
        .iter()
        .enumerate()
        {
            let mut r = report("worker-basic", JobStatus::Succeeded, 1.0, "");
            r.job_id = format!("worker-basic-{i}");
            r.run_id = run.to_string();
            let key = ledger::repo_history_key("runpod-workers", "worker-basic", run, &r.job_id);
            l.put(&key, &r).await.unwrap();
        }
        let h = l.history("worker-basic", 2, None).await.unwrap();
        let ids: Vec<&str> = h.iter().map(|r| r.job_id.as_str()).collect();
        assert_eq!(ids, ["worker-basic-1", "worker-basic-2"]);
        assert_eq!(
            l.history("runpod-workers/worker-basic", 10, None)
                .await
                .unwrap()
                .len(),
            3
        );
        let since = ledger::parse_compact_time("20261102T000000Z");
        let recent = l.history("worker-basic", 10, since).await.unwrap();
        let ids: Vec<&str> = recent.iter().map(|r| r.job_id.as_str()).collect();
        assert_eq!(
            ids,
            ["worker-basic-1", "worker-basic-2"],
            "runs from 2 Nov on"
        );

        // Unknown ids are the user's to fix (exit 2); a corrupt document is not (exit 1).
        let e = l
            .resolve_run(Some("20261201T000000Z-nope00"))
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        let e = l.find_job("nope-1", 5).await.unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        fx.s3()
            .put_object()
            .bucket(&fx.bucket)
            .key(ledger::report_key(run, "queued-1"))
            .body(b"{not json".to_vec().into())
            .send()
            .await
            .unwrap();
        let e = l.run_view(run).await.unwrap_err();
        assert!(matches!(e, CtlError::Document { .. }), "{e}");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(l.latest_run().await.unwrap().as_deref(), Some(run));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unreachable_store_is_a_service_error() {
        let l = Ledger {
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::new()
                    .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                    .region(aws_sdk_s3::config::Region::new("us-east-1"))
                    .endpoint_url("http://127.0.0.1:1")
                    .force_path_style(true)
                    .credentials_provider(aws_sdk_s3::config::Credentials::for_tests())
                    .build(),
            ),
            bucket: "b".into(),
        };
        let e = l.run_ids().await.unwrap_err();
        match &e {
            CtlError::Service { source, .. } => {
                assert_eq!(source.kind, janitor_services::ErrorKind::Unavailable)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.exit_code(), 1);
    }
}
