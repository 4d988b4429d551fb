//! The instance's life in its Auto Scaling group: the IMDSv2 watcher (lifecycle target state,
//! spot notices, rebalance recommendations) and the group actions the daemon takes (scale-in
//! protection, lifecycle heartbeats and completion, idle scale-in).

use std::time::Duration;

use aws_sdk_autoscaling::types::LifecycleState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::aws::describe;

/// What the watcher reports, only when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Target(String),
    Spot(String),
}

/// After this many failed IMDS reads in a row, a failure is logged again (1 in N).
const IMDS_LOG_EVERY: u32 = 12;

/// Polls IMDS every `every` until `stop`; errors are retried on the next turn, never fatal.
pub fn watch_imds(
    every: Duration,
    tx: mpsc::Sender<Notice>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = aws_config::imds::Client::builder()
            .max_attempts(2)
            .connect_timeout(Duration::from_secs(1))
            .read_timeout(Duration::from_secs(2))
            .build();
        let mut last_target: Option<String> = None;
        let mut spot_seen = false;
        let mut rebalance_seen = false;
        let mut failures: u32 = 0;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let target = read(&client, "autoscaling/target-lifecycle-state").await;
            let spot = read(&client, "spot/instance-action").await;
            let rebalance = read(&client, "events/recommendations/rebalance").await;
            match (&target, &spot) {
                (Err(e), _) | (_, Err(e)) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(IMDS_LOG_EVERY) {
                        tracing::warn!(error = %e, failures, "instance metadata could not be read; retrying");
                    }
                    continue;
                }
                _ => {
                    if failures > 0 {
                        tracing::info!(failures, "instance metadata answers again");
                    }
                    failures = 0;
                }
            }
            if let Ok(Some(t)) = target {
                if last_target.as_deref() != Some(t.as_str()) {
                    tracing::info!(target_lifecycle_state = %t, "lifecycle target state");
                    last_target = Some(t.clone());
                    if tx.send(Notice::Target(t)).await.is_err() {
                        return;
                    }
                }
            }
            if let Ok(Some(action)) = spot {
                if !spot_seen {
                    spot_seen = true;
                    tracing::warn!(notice = %action, "spot interruption notice");
                    if tx.send(Notice::Spot(action)).await.is_err() {
                        return;
                    }
                }
            }
            if let Ok(Some(r)) = rebalance {
                if !rebalance_seen {
                    rebalance_seen = true;
                    tracing::warn!(recommendation = %r, "EC2 recommends rebalancing: this spot instance is at elevated risk of interruption");
                }
            }
        }
    })
}

/// A metadata path: `Ok(None)` when it does not exist (404).
async fn read(client: &aws_config::imds::Client, path: &str) -> Result<Option<String>, String> {
    use aws_config::imds::client::error::ImdsError;
    match client.get(format!("/latest/meta-data/{path}")).await {
        Ok(v) => Ok(Some(v.as_ref().trim().to_string())),
        Err(ImdsError::ErrorResponse(r)) if r.response().status().as_u16() == 404 => Ok(None),
        Err(e) => Err(format!("{path}: {}", describe(e))),
    }
}

/// Whether an idle instance may lower the desired capacity by one: never below the group's
/// minimum, never below the busy (protected) instances, and only from `InService`.
pub fn may_scale_in(desired: i32, min: i32, protected: usize, in_service: bool) -> bool {
    let floor = min.max(i32::try_from(protected).unwrap_or(i32::MAX));
    in_service && desired > floor
}

/// This instance as a member of its Auto Scaling group.
#[derive(Clone)]
pub struct Membership {
    pub client: aws_sdk_autoscaling::Client,
    pub group: String,
    pub instance_id: String,
    /// The terminating lifecycle hook, when the group has one.
    pub hook: Option<String>,
    /// Seconds between heartbeats while draining a busy instance.
    pub heartbeat_every: u64,
    /// The hook's heartbeat timeout: how long leaving may take before it is worth a warning.
    pub hook_timeout: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("Auto Scaling {action} for {instance}: {message}")]
pub struct AsgError {
    pub action: &'static str,
    pub instance: String,
    pub message: String,
}

impl Membership {
    fn err(&self, action: &'static str, e: impl std::error::Error) -> AsgError {
        AsgError {
            action,
            instance: self.instance_id.clone(),
            message: describe(e),
        }
    }

    /// Finds this instance's group and terminating hook. `Ok(None)` when it is in no group.
    pub async fn discover(
        client: aws_sdk_autoscaling::Client,
        instance_id: &str,
        fallback_heartbeat: u64,
    ) -> Result<Option<Membership>, AsgError> {
        let err = |action, message: String| AsgError {
            action,
            instance: instance_id.to_string(),
            message,
        };
        let out = client
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| err("DescribeAutoScalingInstances", describe(e)))?;
        let Some(group) = out
            .auto_scaling_instances()
            .first()
            .and_then(|i| i.auto_scaling_group_name())
            .map(str::to_string)
        else {
            return Ok(None);
        };
        let hooks = client
            .describe_lifecycle_hooks()
            .auto_scaling_group_name(&group)
            .send()
            .await
            .map_err(|e| err("DescribeLifecycleHooks", describe(e)))?;
        let hook = hooks
            .lifecycle_hooks()
            .iter()
            .find(|h| h.lifecycle_transition() == Some("autoscaling:EC2_INSTANCE_TERMINATING"));
        let timeout = hook
            .and_then(|h| h.heartbeat_timeout())
            .and_then(|t| u64::try_from(t).ok());
        Ok(Some(Membership {
            client,
            group,
            instance_id: instance_id.to_string(),
            hook: hook
                .and_then(|h| h.lifecycle_hook_name())
                .map(str::to_string),
            // A third of the hook's timeout leaves room for two lost heartbeats.
            heartbeat_every: timeout.map_or(fallback_heartbeat, |t| (t / 3).max(5)),
            hook_timeout: timeout.unwrap_or(3600),
        }))
    }

    pub async fn protect(&self, on: bool) -> Result<(), AsgError> {
        self.client
            .set_instance_protection()
            .auto_scaling_group_name(&self.group)
            .instance_ids(&self.instance_id)
            .protected_from_scale_in(on)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("SetInstanceProtection", e))
    }

    pub async fn heartbeat(&self) -> Result<(), AsgError> {
        let Some(hook) = &self.hook else {
            return Ok(());
        };
        self.client
            .record_lifecycle_action_heartbeat()
            .auto_scaling_group_name(&self.group)
            .lifecycle_hook_name(hook)
            .instance_id(&self.instance_id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("RecordLifecycleActionHeartbeat", e))
    }

    pub async fn complete(&self) -> Result<(), AsgError> {
        let Some(hook) = &self.hook else {
            return Ok(());
        };
        self.client
            .complete_lifecycle_action()
            .auto_scaling_group_name(&self.group)
            .lifecycle_hook_name(hook)
            .instance_id(&self.instance_id)
            .lifecycle_action_result("CONTINUE")
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("CompleteLifecycleAction", e))
    }

    /// Marks the instance unhealthy so the group replaces it.
    pub async fn mark_unhealthy(&self) -> Result<(), AsgError> {
        self.client
            .set_instance_health()
            .instance_id(&self.instance_id)
            .health_status("Unhealthy")
            .should_respect_grace_period(false)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| self.err("SetInstanceHealth", e))
    }

    /// Lowers the desired capacity by one by taking this (idle, unprotected) instance out:
    /// `TerminateInstanceInAutoScalingGroup` with `ShouldDecrementDesiredCapacity`, which AWS
    /// applies atomically, so a concurrent change by janitorctl is never overwritten. Never
    /// below the group's minimum or the number of busy (protected) instances. `Ok(false)` when
    /// it would go too low.
    pub async fn scale_in(&self) -> Result<bool, AsgError> {
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.group)
            .send()
            .await
            .map_err(|e| self.err("DescribeAutoScalingGroups", e))?;
        let Some(g) = out.auto_scaling_groups().first() else {
            return Ok(false);
        };
        let desired = g.desired_capacity().unwrap_or(0);
        let min = g.min_size().unwrap_or(0);
        let protected = g
            .instances()
            .iter()
            .filter(|i| i.protected_from_scale_in() == Some(true))
            .count();
        let floor = min.max(i32::try_from(protected).unwrap_or(i32::MAX));
        let me = g
            .instances()
            .iter()
            .find(|i| i.instance_id() == Some(self.instance_id.as_str()));
        let in_service =
            me.is_some_and(|i| i.lifecycle_state() == Some(&LifecycleState::InService));
        if desired - 1 < floor || !in_service {
            tracing::info!(
                desired,
                min,
                protected,
                in_service,
                "idle, but the group may not shrink below its floor"
            );
            return Ok(false);
        }
        self.client
            .terminate_instance_in_auto_scaling_group()
            .instance_id(&self.instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map_err(|e| self.err("TerminateInstanceInAutoScalingGroup", e))?;
        tracing::info!(group = %self.group, from = desired, to = desired - 1, "idle with an empty queue: lowered the desired capacity by one, taking this instance out");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn scale_in_floor() {
        // (desired, min, protected, in_service) -> allowed
        let cases = [
            ((3, 0, 2, true), true),
            ((2, 0, 2, true), false),
            ((1, 0, 0, true), true),
            ((1, 1, 0, true), false),
            ((4, 2, 1, true), true),
            ((3, 2, 2, true), true),
            ((3, 0, 0, false), false),
            ((0, 0, 0, true), false),
        ];
        for ((d, m, p, s), want) in cases {
            assert_eq!(super::may_scale_in(d, m, p, s), want, "{d} {m} {p} {s}");
        }
    }
}
