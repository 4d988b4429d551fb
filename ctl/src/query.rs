//! The questions: `status`, `show`, `results`, `fetch-report`, `logs`. S3 lists and gets,
//! plus the queue's depth, the group's instances and the job's log stream.

use std::path::Path;
use std::time::Duration;

use janitor_model::ledger;
use janitor_model::ledger::StartedRecord;
use janitor_model::report::Report;
use serde::Serialize;
use time::OffsetDateTime;

use crate::fleet::{self, GroupView, QueueDepth};
use crate::ledger::{JobState, RunView};
use crate::term::{say, say_part, tell};
use crate::{output, print_json, CtlError, Ctx};

/// How many of the newest runs `logs` searches for a job.
const LOG_RUN_SEARCH: usize = 20;

/// One pool's queue and group, as `status` shows them.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub pool: String,
    pub instance_type: String,
    pub queue: Option<QueueDepth>,
    pub dead_letter: Option<u64>,
    pub group: Option<GroupView>,
}

#[derive(Serialize)]
struct StatusView {
    run: RunView,
    minutes_left: i64,
    /// With one pool, its queue, dead letters and group, as before pools.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue: Option<QueueDepth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letter: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<GroupView>,
    pools: Vec<PoolStatus>,
}

/// Every pool's queue depth, dead letters and group (what the settings allow to read).
async fn pool_status(ctx: &Ctx) -> Result<Vec<PoolStatus>, CtlError> {
    let Ok(pools) = ctx.settings.pools() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for p in &pools {
        let dead_letter = match &p.dlq_url {
            Some(url) => Some(fleet::depth(&ctx.sqs(), url).await?.waiting),
            None => None,
        };
        let group = match p.fleet(ctx) {
            Ok(f) => Some(f.describe().await?),
            Err(_) => None,
        };
        out.push(PoolStatus {
            pool: p.name().to_string(),
            instance_type: p.shape.instance_type.clone(),
            queue: Some(fleet::depth(&ctx.sqs(), &p.queue_url).await?),
            dead_letter,
            group,
        });
    }
    Ok(out)
}

pub async fn status(ctx: &Ctx, run_id: Option<&str>, json: bool) -> Result<u8, CtlError> {
    let ledger = ctx.ledger()?;
    let run_id = ledger.resolve_run(run_id).await?;
    let mut run = ledger.run_view(&run_id).await?;
    let pools = pool_status(ctx).await?;
    let now = OffsetDateTime::now_utc();
    if json {
        for j in &mut run.jobs {
            j.report = None;
        }
        let minutes_left = ((run.deadline() - now).whole_seconds().max(0) + 59) / 60;
        let one = match pools.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        };
        return print_json(&StatusView {
            run,
            minutes_left,
            queue: one.as_ref().and_then(|p| p.queue),
            dead_letter: one.as_ref().and_then(|p| p.dead_letter),
            group: one.and_then(|p| p.group),
            pools,
        })
        .map(|()| 0);
    }
    say_part!("{}", output::status_text(&run, &pools, now));
    Ok(0)
}

/// How `show` prints a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

pub async fn show(
    ctx: &Ctx,
    run_id: &str,
    format: Format,
    html: Option<&std::path::Path>,
) -> Result<u8, CtlError> {
    let ledger = ctx.ledger()?;
    // `latest`: the newest run (what CI shows after `run`).
    let run_id = ledger
        .resolve_run(Some(run_id).filter(|id| *id != "latest"))
        .await?;
    let view = ledger.run_view(&run_id).await?;
    if let Some(path) = html {
        std::fs::write(path, crate::page::run_html(&view)).map_err(|source| CtlError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        tell!("The run's page: {}", path.display());
    }
    match format {
        Format::Json => return print_json(&view).map(|()| 0),
        Format::Markdown => say_part!("{}", crate::markdown::run_markdown(&view)),
        Format::Text => say!("{}", output::show_text(&view)),
    }
    Ok(0)
}

/// `--since`: `7d`, `12h`, `90m`, `1h30m` back from `now`, or a UTC date `2026-11-01`.
pub fn parse_since(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, CtlError> {
    let bad = || {
        CtlError::Usage(format!(
            "--since `{text}`: give a duration back from now (`7d`, `12h`, `90m`) or a date (`2026-11-01`)"
        ))
    };
    if let Some(days) = text.strip_suffix('d') {
        let n: i64 = days.parse().map_err(|_| bad())?;
        return Ok(now - time::Duration::days(n));
    }
    if let Ok(d) = janitor_model::duration::parse(text) {
        return Ok(now - d);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, format)
        .map(|d| d.midnight().assume_utc())
        .map_err(|_| bad())
}

pub async fn results(
    ctx: &Ctx,
    repo: &str,
    limit: usize,
    since: Option<OffsetDateTime>,
    json: bool,
) -> Result<u8, CtlError> {
    let bad = repo.is_empty()
        || repo.split('/').count() > 2
        || repo
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..");
    if bad {
        return Err(CtlError::Usage(format!(
            "--repo `{repo}`: give `name` or `organization/name`"
        )));
    }
    let reports = ctx.ledger()?.history(repo, limit, since).await?;
    if json {
        return print_json(&reports).map(|()| 0);
    }
    say!("{}", output::results_text(repo, &reports));
    Ok(0)
}

#[derive(Serialize)]
struct Combined<'a> {
    run: &'a RunView,
    reports: Vec<&'a Report>,
}

#[derive(Serialize)]
struct Fetched {
    run_id: String,
    directory: String,
    files: Vec<String>,
}

pub async fn fetch_report(
    ctx: &Ctx,
    run_id: Option<&str>,
    out: &Path,
    json: bool,
) -> Result<u8, CtlError> {
    let ledger = ctx.ledger()?;
    let run_id = ledger.resolve_run(run_id).await?;
    let view = ledger.run_view(&run_id).await?;
    let dir = out.join(&run_id);
    std::fs::create_dir_all(&dir).map_err(CtlError::io(&dir))?;
    let mut files = Vec::new();
    let write = |name: String, body: Vec<u8>| -> Result<String, CtlError> {
        let path = dir.join(name);
        std::fs::write(&path, body).map_err(CtlError::io(&path))?;
        Ok(path.display().to_string())
    };
    let reports: Vec<&Report> = view.jobs.iter().filter_map(|j| j.report.as_ref()).collect();
    for r in &reports {
        let body = serde_json::to_vec_pretty(r).map_err(|e| CtlError::Document {
            key: r.job_id.clone(),
            reason: e.to_string(),
        })?;
        files.push(write(format!("{}.json", r.job_id), body)?);
    }
    let combined = serde_json::to_vec_pretty(&Combined {
        run: &view,
        reports: reports.clone(),
    })
    .map_err(|e| CtlError::Document {
        key: "run.json".to_string(),
        reason: e.to_string(),
    })?;
    files.push(write("run.json".to_string(), combined)?);
    if json {
        return print_json(&Fetched {
            run_id,
            directory: dir.display().to_string(),
            files,
        })
        .map(|()| 0);
    }
    say!(
        "Run {run_id}: {} report(s) of {} job(s)",
        reports.len(),
        view.jobs.len()
    );
    for f in &files {
        say!("  {f}");
    }
    Ok(0)
}

pub async fn logs(
    ctx: &Ctx,
    job_id: &str,
    run: Option<&str>,
    follow: bool,
) -> Result<u8, CtlError> {
    janitor_model::names::check_id(job_id).map_err(|e| CtlError::Usage(format!("job id {e}")))?;
    let ledger = ctx.ledger()?;
    let run_id = match run {
        Some(r) => ledger.resolve_run(Some(r)).await?,
        None => ledger.find_job(job_id, LOG_RUN_SEARCH).await?,
    };
    let group = ctx.settings.log_group();
    let client = ctx.logs();
    let mut token: Option<String> = None;
    let mut stream: Option<String> = None;
    loop {
        let view = ledger.run_view(&run_id).await?;
        let job = view
            .jobs
            .iter()
            .find(|j| j.job_id == job_id)
            .ok_or_else(|| CtlError::Usage(format!("no job `{job_id}` in run {run_id}")))?;
        let finished = job.state == JobState::Finished;
        // A finished job whose output is not all in CloudWatch (dropped, refused, or the
        // stream expired) is read from its archive, which has every line.
        let archive = job
            .report
            .as_ref()
            .and_then(|r| r.output.as_ref())
            .and_then(|o| {
                o.archive
                    .clone()
                    .map(|key| (key, o.dropped_events + o.failed_events > 0))
            });
        if let Some((key, incomplete)) = &archive {
            let in_cloudwatch = !incomplete
                && match job.report.as_ref().and_then(|r| r.logs.as_ref()) {
                    Some(l) => stream_exists(&client, &group, &l.stream).await?,
                    None => false,
                };
            if !in_cloudwatch {
                return print_archive(&ledger, key).await;
            }
        }
        if stream.is_none() {
            stream = match &job.report {
                Some(r) => r.logs.as_ref().map(|l| l.stream.clone()),
                None if job.attempt > 0 => ledger
                    .get::<StartedRecord>(&ledger::started_key(&run_id, job_id, job.attempt))
                    .await?
                    .map(|s| format!("{}/{job_id}", s.instance.id)),
                None => None,
            };
        }
        if let Some(s) = &stream {
            loop {
                let out = client
                    .get_log_events()
                    .log_group_name(&group)
                    .log_stream_name(s)
                    .start_from_head(true)
                    .set_next_token(token.clone())
                    .send()
                    .await;
                let out = match out {
                    Ok(o) => o,
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|x| x.is_resource_not_found_exception()) =>
                    {
                        break
                    }
                    Err(e) => {
                        return Err(CtlError::Service {
                            context: "reading the job's output".to_string(),
                            source: janitor_services::error::ServiceError::aws(
                                "CloudWatch Logs",
                                "GetLogEvents",
                                format!("{group}/{s}"),
                                e,
                            ),
                        })
                    }
                };
                for e in out.events() {
                    say!("{}", e.message().unwrap_or(""));
                }
                let next = out.next_forward_token().map(str::to_string);
                let same = next == token;
                token = next;
                if same || out.events().is_empty() {
                    break;
                }
            }
        } else if !follow {
            tell!("job {job_id} has not started yet: no output");
            return Ok(0);
        }
        if !follow || finished {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Whether the log group still has the stream.
async fn stream_exists(
    client: &aws_sdk_cloudwatchlogs::Client,
    group: &str,
    stream: &str,
) -> Result<bool, CtlError> {
    match client
        .get_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .limit(1)
        .start_from_head(true)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error()
                .is_some_and(|x| x.is_resource_not_found_exception()) =>
        {
            Ok(false)
        }
        Err(e) => Err(CtlError::Service {
            context: "reading the job's output".to_string(),
            source: janitor_services::error::ServiceError::aws(
                "CloudWatch Logs",
                "GetLogEvents",
                format!("{group}/{stream}"),
                e,
            ),
        }),
    }
}

/// Prints a job's output from its archive in the ledger.
async fn print_archive(ledger: &crate::ledger::Ledger, key: &str) -> Result<u8, CtlError> {
    let gz = ledger
        .get_bytes(key)
        .await?
        .ok_or_else(|| CtlError::Document {
            key: key.to_string(),
            reason: "the report names this archive, but the ledger does not have it".to_string(),
        })?;
    let text = janitor_services::logs::read_archive(&gz).map_err(|e| CtlError::Document {
        key: key.to_string(),
        reason: format!("not a gzipped output archive: {e}"),
    })?;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) ends the listing; it is not an error.
    let _ = out.write_all(text.as_bytes());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_durations_and_dates() {
        let now = time::macros::datetime!(2026-12-01 12:00:00 UTC);
        let cases = [
            ("7d", Some(time::macros::datetime!(2026-11-24 12:00:00 UTC))),
            (
                "12h",
                Some(time::macros::datetime!(2026-12-01 00:00:00 UTC)),
            ),
            (
                "90m",
                Some(time::macros::datetime!(2026-12-01 10:30:00 UTC)),
            ),
            (
                "2026-11-01",
                Some(time::macros::datetime!(2026-11-01 00:00:00 UTC)),
            ),
            ("yesterday", None),
            ("7", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_since(text, now).ok(), want, "{text}");
        }
        assert_eq!(parse_since("soon", now).unwrap_err().exit_code(), 2);
    }
}
