//! The S3 ledger's layout: every key the daemon and ctl read or write, in one place.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::report::InstanceInfo;

/// Everything lives under this prefix, so the instance role needs `s3:PutObject` on it alone.
pub const PREFIX: &str = "janitor-reports/";

/// The CloudWatch log group job output goes to, unless configured otherwise.
pub const DEFAULT_LOG_GROUP: &str = "/janitor-runner";

/// A job's log stream: `{instance-id}/{job-id}`.
pub fn log_stream(instance_id: &str, job_id: &str) -> String {
    format!("{instance_id}/{job_id}")
}

/// Where every run folder lives.
pub fn runs_prefix() -> String {
    format!("{PREFIX}runs/")
}

/// The jobs of a run.
pub fn jobs_prefix(run_id: &str) -> String {
    format!("{PREFIX}runs/{run_id}/jobs/")
}

/// Everything recorded for one job.
pub fn job_prefix(run_id: &str, job_id: &str) -> String {
    format!("{PREFIX}runs/{run_id}/jobs/{job_id}/")
}

/// Every repository's history.
pub fn repos_prefix() -> String {
    format!("{PREFIX}repos/")
}

/// An attempt a daemon found unfinished after a restart.
pub fn crashed_key(run_id: &str, job_id: &str, attempt: &str) -> String {
    format!("{PREFIX}runs/{run_id}/jobs/{job_id}/crashed-{attempt}.json")
}

/// A GPU job handed back by an instance without a usable GPU.
pub fn handed_back_key(run_id: &str, job_id: &str, attempt: u32) -> String {
    format!("{PREFIX}runs/{run_id}/jobs/{job_id}/handed-back-{attempt}.json")
}

/// Where daemons before the `rejected/{date}/` layout recorded a rejected job; read only.
pub fn job_rejected_key(run_id: &str, job_id: &str) -> String {
    format!("{PREFIX}runs/{run_id}/jobs/{job_id}/rejected.json")
}

/// A compact UTC time that sorts as text: `20261122T153000Z`.
pub fn compact_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The time a compact time (`20261122T153000Z`) or an id starting with one names.
pub fn parse_compact_time(text: &str) -> Option<OffsetDateTime> {
    let t = text.get(..16)?;
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<u32>().ok();
    if t.as_bytes().get(8) != Some(&b'T') || t.as_bytes().get(15) != Some(&b'Z') {
        return None;
    }
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc())
}

/// The run id inside a history entry's key (see [`repo_history_key`]).
pub fn run_id_of_history_key(key: &str) -> Option<&str> {
    let file = key.rsplit('/').next()?;
    file.get(17..)
}

pub fn run_prefix(run_id: &str) -> String {
    format!("{PREFIX}runs/{run_id}/")
}

pub fn manifest_key(run_id: &str) -> String {
    format!("{PREFIX}runs/{run_id}/manifest.json")
}

pub fn started_key(run_id: &str, job_id: &str, attempt: u32) -> String {
    format!("{PREFIX}runs/{run_id}/jobs/{job_id}/started-{attempt}.json")
}

/// A job's whole output, gzipped, beside its report.
pub fn output_key(run_id: &str, job_id: &str) -> String {
    format!("{}output.log.gz", job_prefix(run_id, job_id))
}

/// The agent's change, as a patch against the cloned commit, beside the report.
pub fn patch_key(run_id: &str, job_id: &str) -> String {
    format!("{}fix.patch", job_prefix(run_id, job_id))
}

pub fn report_key(run_id: &str, job_id: &str) -> String {
    format!("{PREFIX}runs/{run_id}/jobs/{job_id}/report.json")
}

/// A repository's history entry for one job: one per job (a retry overwrites it), named so
/// that an ascending listing is newest first: the run id's leading UTC time with every digit
/// inverted (9 − d), then the run and job ids. `results --repo X --limit N` reads N keys.
pub fn repo_history_key(org: &str, name: &str, run_id: &str, job_id: &str) -> String {
    format!(
        "{}{}-{run_id}-{job_id}.json",
        repo_history_prefix(org, name),
        newest_first(run_id)
    )
}

/// Where one repository's history lives.
pub fn repo_history_prefix(org: &str, name: &str) -> String {
    format!("{PREFIX}repos/{org}/{name}/")
}

/// `20261122T153005Z…` → `79738877T846994Z`; a run id without a leading time sorts last.
fn newest_first(run_id: &str) -> String {
    let head: String = run_id.chars().take(16).collect();
    let is_time = head.len() == 16
        && head.chars().enumerate().all(|(i, c)| match i {
            8 => c == 'T',
            15 => c == 'Z',
            _ => c.is_ascii_digit(),
        });
    if !is_time {
        return "~".to_string();
    }
    head.chars()
        .map(|c| match c.to_digit(10) {
            Some(d) => char::from_digit(9 - d, 10).unwrap_or(c),
            None => c,
        })
        .collect()
}

pub fn instance_event_key(instance_id: &str, at: OffsetDateTime, event: &str) -> String {
    format!(
        "{PREFIX}instances/{instance_id}/{}-{event}.json",
        compact_time(at)
    )
}

/// Refused messages are recorded here, by day and SQS message id, never under `runs/`: a
/// message's run id is not to be trusted, and a made-up one must not look like a run.
pub fn rejected_key(at: OffsetDateTime, message_id: &str) -> String {
    format!("{}{message_id}.json", rejected_day_prefix(at))
}

/// The refusals of one UTC day: `rejected/2026-12-01/`.
pub fn rejected_day_prefix(at: OffsetDateTime) -> String {
    let t = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{PREFIX}rejected/{:04}-{:02}-{:02}/",
        t.year(),
        u8::from(t.month()),
        t.day()
    )
}

/// A new run id: time first, so the latest run is the last key in a listing.
pub fn new_run_id(now: OffsetDateTime) -> String {
    let rand = uuid::Uuid::new_v4().simple().to_string();
    format!("{}-{}", compact_time(now), &rand[..6])
}

/// A new job id: the repository name and a random suffix, unique across runs.
pub fn new_job_id(repo_name: &str) -> String {
    let rand = uuid::Uuid::new_v4().simple().to_string();
    let name: String = repo_name.chars().take(100).collect();
    format!("{name}-{}", &rand[..8])
}

/// `runs/{run_id}/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub schema: u32,
    pub run_id: String,
    pub config_path: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub max_concurrent_instances: u32,
    pub jobs: Vec<ManifestJob>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_cost_usd: Option<f64>,
    /// `run --org`: what the organisation had and what was left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<Discovery>,
    /// Repositories of the config that no pool could run, and why (not enqueued).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_run: Vec<SkippedRepo>,
    /// The most instances each pool's jobs could run on at once (its group's limit under
    /// `max_concurrent_instances`): the waves, hence the run's timeout, are counted by pool.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pool_instances: std::collections::BTreeMap<String, u32>,
}

/// An organisation run's discovery, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    pub organization: String,
    /// The repositories that became jobs.
    pub discovered: Vec<String>,
    pub skipped: Vec<SkippedRepo>,
    /// The file of per-repository overrides, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<String>,
}

/// A repository of the organisation that is not a job, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRepo {
    pub name: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ManifestJob {
    pub job_id: String,
    pub repository: String,
    pub prompt: String,
    pub gpu_required: bool,
    pub timeout_seconds: u64,
    /// The instance type it runs on: its pool's (or its own `instance_type:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The pool whose queue it was sent to, and why that pool (`janitor_model::pools`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

/// `runs/{run_id}/jobs/{job_id}/started-{attempt}.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartedRecord {
    pub job_id: String,
    pub run_id: String,
    pub attempt: u32,
    pub instance: InstanceInfo,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

/// `instances/{id}/{time}-{event}.json`: the cost trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceEvent {
    pub event: String,
    pub instance: InstanceInfo,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub detail: String,
}

/// `rejected/{message_id}.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub message_id: String,
    /// The ids the body claimed, when they could be read (unverified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub reason: String,
    pub receive_count: u32,
    pub instance_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The first 4 KiB of the body, for whoever has to find the sender.
    pub body_head: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_design() {
        let t = time::macros::datetime!(2026-11-22 15:30:05 UTC);
        assert_eq!(manifest_key("r"), "janitor-reports/runs/r/manifest.json");
        assert_eq!(
            started_key("r", "j", 2),
            "janitor-reports/runs/r/jobs/j/started-2.json"
        );
        assert_eq!(
            report_key("r", "j"),
            "janitor-reports/runs/r/jobs/j/report.json"
        );
        assert_eq!(
            repo_history_key("o", "n", "20261122T153005Z-abc123", "j"),
            "janitor-reports/repos/o/n/79738877T846994Z-20261122T153005Z-abc123-j.json"
        );
        // Newer runs list first; ids without a leading time last.
        let newer = repo_history_key("o", "n", "20261122T153006Z-aaaaaa", "j");
        let older = repo_history_key("o", "n", "20251231T235959Z-zzzzzz", "j");
        let odd = repo_history_key("o", "n", "hand-made", "j");
        let mut keys = vec![odd.clone(), older.clone(), newer.clone()];
        keys.sort();
        assert_eq!(keys, [newer, older, odd]);
        assert_eq!(
            instance_event_key("i-1", t, "launch"),
            "janitor-reports/instances/i-1/20261122T153005Z-launch.json"
        );
        assert_eq!(parse_compact_time("20261122T153005Z-abc123"), Some(t));
        assert_eq!(parse_compact_time("2026-11-22"), None);
        assert_eq!(parse_compact_time("20261322T153005Z"), None);
        let h = repo_history_key("o", "n", "20261122T153005Z-abc123", "j");
        assert_eq!(
            run_id_of_history_key(&h),
            Some("20261122T153005Z-abc123-j.json")
        );
        let a = new_run_id(t);
        assert!(a.starts_with("20261122T153005Z-") && a.len() == 23, "{a}");
        assert!(crate::names::check_id(&new_job_id("worker-basic")).is_ok());
    }
}
