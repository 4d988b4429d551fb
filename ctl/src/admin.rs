//! Changing the fleet: `scale` and the emergency `kill-all`.

use std::collections::HashSet;

use janitor_model::config::RepoRef;
use janitor_model::ledger;
use janitor_model::report::{InstanceInfo, JobIdentity, JobStatus, Report};
use serde::Serialize;

use crate::fleet::{self, auto_desired, sqs_err};
use crate::ledger::JobState;
use crate::pools::Pool;
use crate::term::say;
use crate::{print_json, CtlError, Ctx};

/// Upper bound on receive calls while purging, so a busy queue cannot hold kill-all forever.
const PURGE_MAX_RECEIVES: usize = 1000;

#[derive(Serialize)]
struct Scaled {
    pool: String,
    group: String,
    before: i32,
    after: i32,
    backlog: Option<u64>,
    protected: usize,
}

/// The pools a command acts on: the one named, else all.
fn chosen(pools: Vec<Pool>, only: Option<&str>) -> Result<Vec<Pool>, CtlError> {
    let Some(name) = only else {
        return Ok(pools);
    };
    let names: Vec<String> = pools.iter().map(|p| p.name().to_string()).collect();
    let picked: Vec<Pool> = pools.into_iter().filter(|p| p.name() == name).collect();
    if picked.is_empty() {
        return Err(CtlError::Usage(format!(
            "--pool {name}: no such pool; the pools are {}",
            names.join(", ")
        )));
    }
    Ok(picked)
}

/// `scale`: each chosen pool's group to its own target. JSON: one object per pool, in a list
/// when there are several.
pub async fn scale(
    ctx: &Ctx,
    pool: Option<&str>,
    auto: bool,
    desired: Option<i32>,
    jobs_per_worker: u32,
    json: bool,
) -> Result<u8, CtlError> {
    let pools = chosen(ctx.settings.pools()?, pool)?;
    if desired.is_some() && pools.len() > 1 {
        return Err(CtlError::Usage(format!(
            "--desired sets one group: name its pool with --pool ({})",
            pools.iter().map(Pool::name).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut done = Vec::new();
    for p in &pools {
        let fleet = p.fleet(ctx)?;
        let g = fleet.describe().await?;
        let (target, backlog) = match (auto, desired) {
            (true, _) => {
                let d = fleet::depth(&ctx.sqs(), &p.queue_url).await?;
                let backlog = d.waiting + d.in_flight;
                (
                    auto_desired(backlog, jobs_per_worker, g.max_size, g.protected()),
                    Some(backlog),
                )
            }
            (false, Some(n)) => {
                if n < g.min_size || n > g.max_size {
                    return Err(CtlError::Usage(format!(
                        "--desired {n}: the group {} takes {} to {}",
                        g.name, g.min_size, g.max_size
                    )));
                }
                (n, None)
            }
            (false, None) => return Err(CtlError::Usage("give --auto or --desired N".to_string())),
        };
        if target != g.desired_capacity {
            fleet.set_desired(target).await?;
        }
        done.push(Scaled {
            pool: p.name().to_string(),
            group: g.name.clone(),
            before: g.desired_capacity,
            after: target,
            backlog,
            protected: g.protected(),
        });
    }
    if json {
        return match done.as_slice() {
            [one] => print_json(one),
            all => print_json(&all),
        }
        .map(|()| 0);
    }
    for out in &done {
        let why = out.backlog.map_or(String::new(), |b| {
            format!(" (backlog {b}, {} busy)", out.protected)
        });
        say!(
            "Desired capacity of {}: {} → {}{why}",
            out.group,
            out.before,
            out.after
        );
    }
    Ok(0)
}

/// One pool's part of a kill-all.
#[derive(Serialize, Default)]
struct PoolKilled {
    pool: String,
    group: String,
    desired_before: i32,
}

#[derive(Serialize, Default)]
struct Killed {
    run_id: Option<String>,
    purged: usize,
    released: usize,
    /// The groups' desired capacities before, summed over the pools.
    desired_before: i32,
    unprotected: Vec<String>,
    terminated: Vec<String>,
    cancelled: Vec<String>,
    pools: Vec<PoolKilled>,
    errors: Vec<String>,
}

/// Empties one pool: its pending jobs (of the run, or all), its capacity, its instances.
async fn kill_pool(
    ctx: &Ctx,
    pool: &Pool,
    run_id: Option<&str>,
    done: &mut Killed,
) -> Result<(), CtlError> {
    let fleet = pool.fleet(ctx)?;
    // 1. Pending jobs off the queue first, so nothing new starts.
    let (purged, released) = purge(&ctx.sqs(), &pool.queue_url, run_id).await?;
    done.purged += purged;
    done.released += released;

    // 2. No protection, no capacity, no instances. Every step is tried even if one fails.
    let g = fleet.describe().await?;
    done.desired_before += g.desired_capacity;
    done.pools.push(PoolKilled {
        pool: pool.name().to_string(),
        group: g.name.clone(),
        desired_before: g.desired_capacity,
    });
    let protected: Vec<String> = g
        .instances
        .iter()
        .filter(|i| i.protected_from_scale_in)
        .map(|i| i.instance_id.clone())
        .collect();
    match fleet.unprotect(&protected).await {
        Ok(()) => done.unprotected.extend(protected),
        Err(e) => done.errors.push(e.to_string()),
    }
    if let Err(e) = fleet.zero(&g).await {
        done.errors.push(e.to_string());
    }
    // Zero capacity starts terminating the unprotected instances; the rest are terminated here.
    let still = fleet.describe().await?;
    for i in &still.instances {
        if i.lifecycle_state.starts_with("Terminat") {
            continue;
        }
        if let Err(e) = fleet.terminate(&i.instance_id).await {
            done.errors.push(e.to_string());
        }
    }
    done.terminated
        .extend(g.instances.iter().map(|i| i.instance_id.clone()));
    Ok(())
}

/// `kill-all`: every pool emptied (one failing does not stop the others), then the run's
/// unfinished jobs marked cancelled.
pub async fn kill_all(
    ctx: &Ctx,
    run_id: Option<&str>,
    all: bool,
    json: bool,
) -> Result<u8, CtlError> {
    let pools = ctx.settings.pools()?;
    for p in &pools {
        p.fleet(ctx)?;
    }
    let ledger = ctx.ledger()?;
    let run_id = match (all, run_id) {
        (true, None) => None,
        (_, r) => Some(ledger.resolve_run(r).await?),
    };
    let mut done = Killed {
        run_id: run_id.clone(),
        ..Killed::default()
    };
    for p in &pools {
        if let Err(e) = kill_pool(ctx, p, run_id.as_deref(), &mut done).await {
            done.errors.push(format!("pool {}: {e}", p.name()));
        }
    }

    // 3. The ledger says what happened to the jobs that will not finish.
    if let Some(run_id) = &run_id {
        let view = ledger.run_view(run_id).await?;
        for j in view.jobs.iter().filter(|j| j.state != JobState::Finished) {
            let (organization, name) = j
                .repository
                .split_once('/')
                .unwrap_or(("unknown", &j.repository));
            let job = JobIdentity {
                job_id: j.job_id.clone(),
                run_id: run_id.clone(),
                repo: RepoRef {
                    organization: organization.to_string(),
                    name: name.to_string(),
                    url: None,
                    git_ref: None,
                },
                prompt: j.prompt.clone(),
                gpu_required: true,
                enqueued_at: view.created_at,
                attempt: j.attempt,
            };
            let instance = InstanceInfo {
                id: j.instance_id.clone().unwrap_or_else(|| "none".to_string()),
                instance_type: "unknown".to_string(),
                availability_zone: "unknown".to_string(),
                lifecycle: "unknown".to_string(),
            };
            let report = Report::without_steps(
                job,
                instance,
                JobStatus::Cancelled,
                "cancelled by janitorctl kill-all".to_string(),
                env!("CARGO_PKG_VERSION"),
            );
            match ledger
                .put(&ledger::report_key(run_id, &j.job_id), &report)
                .await
            {
                Ok(()) => done.cancelled.push(j.job_id.clone()),
                Err(e) => done.errors.push(e.to_string()),
            }
        }
    }

    let code = if done.errors.is_empty() { 0 } else { 1 };
    if json {
        print_json(&done)?;
        return Ok(code);
    }
    let scope = run_id
        .as_deref()
        .map_or("any run".to_string(), |r| format!("run {r}"));
    say!(
        "Purged {} pending job(s) of {scope} from the queue{} ({} of other runs left there)",
        done.purged,
        if pools.len() > 1 { "s" } else { "" },
        done.released
    );
    for p in &done.pools {
        say!("Desired capacity of {}: {} → 0", p.group, p.desired_before);
    }
    say!(
        "Removed scale-in protection from {} instance(s)",
        done.unprotected.len()
    );
    say!(
        "Terminating {} instance(s){}{}",
        done.terminated.len(),
        if done.terminated.is_empty() { "" } else { ": " },
        done.terminated.join(", ")
    );
    if !done.terminated.is_empty() {
        say!("(instances with a running job drain first through the group's lifecycle hook, at most the job's timeout)");
    }
    say!(
        "Marked {} unfinished job(s) cancelled",
        done.cancelled.len()
    );
    for e in &done.errors {
        say!("FAILED: {e}");
    }
    Ok(code)
}

/// Deletes the waiting messages of `run_id` (all when `None`); others are released at once.
/// Returns (deleted, released).
async fn purge(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    run_id: Option<&str>,
) -> Result<(usize, usize), CtlError> {
    let mut seen: HashSet<String> = HashSet::new();
    let (mut deleted, mut released) = (0, 0);
    for _ in 0..PURGE_MAX_RECEIVES {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .wait_time_seconds(1)
            .send()
            .await
            .map_err(sqs_err("ReceiveMessage", url, format!("purging {url}")))?;
        let messages = out.messages();
        if messages.is_empty() {
            break;
        }
        let mut new = false;
        for m in messages {
            let id = m.message_id().unwrap_or_default().to_string();
            let receipt = m.receipt_handle().unwrap_or_default();
            let body_run = serde_json::from_str::<serde_json::Value>(m.body().unwrap_or(""))
                .ok()
                .and_then(|v| v.get("run_id").and_then(|r| r.as_str()).map(str::to_string));
            if run_id.is_none_or(|r| body_run.as_deref() == Some(r)) {
                sqs.delete_message()
                    .queue_url(url)
                    .receipt_handle(receipt)
                    .send()
                    .await
                    .map_err(sqs_err("DeleteMessage", url, format!("purging {url}")))?;
                deleted += 1;
                new = true;
                continue;
            }
            // Another run's job: back on the queue at once, every time it is seen.
            sqs.change_message_visibility()
                .queue_url(url)
                .receipt_handle(receipt)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(sqs_err(
                    "ChangeMessageVisibility",
                    url,
                    format!("purging {url}"),
                ))?;
            if seen.insert(id) {
                released += 1;
                new = true;
            }
        }
        if !new {
            break;
        }
    }
    Ok((deleted, released))
}

#[cfg(test)]
mod tests {
    use super::*;
    use janitor_testkit::Fixture;

    #[tokio::test(flavor = "multi_thread")]
    async fn purge_deletes_the_runs_jobs_and_releases_the_others() {
        let fx = Fixture::start(&[]).await;
        let sqs = fx.sqs();
        for run in ["run-a", "run-a", "run-b"] {
            sqs.send_message()
                .queue_url(&fx.queue_url)
                .message_body(serde_json::json!({ "run_id": run }).to_string())
                .send()
                .await
                .unwrap();
        }
        let (deleted, released) = purge(&sqs, &fx.queue_url, Some("run-a")).await.unwrap();
        assert_eq!((deleted, released), (2, 1));
        assert_eq!(
            fx.depth(&fx.queue_url).await,
            (1, 0),
            "the other run's job is visible again at once"
        );
        let (deleted, _) = purge(&sqs, &fx.queue_url, None).await.unwrap();
        assert_eq!(deleted, 1, "--all takes every pending job");
        assert_eq!(fx.depth(&fx.queue_url).await, (0, 0));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_missing_queue_is_a_service_error_naming_it() {
        let fx = Fixture::start(&[]).await;
        let url = format!("{}/000000000000/no-such-queue", fx.endpoint);
        let e = purge(&fx.sqs(), &url, None).await.unwrap_err();
        assert!(e.to_string().contains("no-such-queue"), "{e}");
        assert_eq!(e.exit_code(), 1);
    }
}
