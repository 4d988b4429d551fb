//! This instance in its Auto Scaling group: the `Fleet` trait (scale-in protection, lifecycle
//! heartbeats and completion, health, the group's figures, leaving) and its ASG implementation.

use std::future::Future;

use aws_sdk_autoscaling::types::LifecycleState;

use crate::error::ServiceError;

/// The group's figures an idle instance decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupView {
    pub desired: i32,
    pub min: i32,
    /// Instances protected from scale-in: the busy ones.
    pub protected: usize,
    /// Whether this instance is `InService` in the group.
    pub in_service: bool,
}

/// The group actions the daemon takes for its own instance.
pub trait Fleet: Send + Sync {
    /// Seconds between lifecycle heartbeats while a busy instance drains.
    fn heartbeat_every(&self) -> u64;
    fn protect(&self, on: bool) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// `RecordLifecycleActionHeartbeat` (nothing when the group has no terminating hook).
    fn heartbeat(&self) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// `CompleteLifecycleAction(CONTINUE)` (nothing when the group has no terminating hook).
    fn complete(&self) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// Marks the instance unhealthy so the group replaces it.
    fn mark_unhealthy(&self) -> impl Future<Output = Result<(), ServiceError>> + Send;
    /// The group's figures; `Ok(None)` when the group is gone.
    fn group(&self) -> impl Future<Output = Result<Option<GroupView>, ServiceError>> + Send;
    /// Lowers the group's desired capacity from `from` to `from - 1`. The group's own scale-in
    /// then takes an unprotected (idle) instance, and with a warm pool's reuse policy stops it
    /// into the pool with its cache volume, which an API terminate would not do.
    fn lower_desired(&self, from: i32) -> impl Future<Output = Result<(), ServiceError>> + Send;
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

impl Membership {
    fn err<E, R>(
        &self,
        action: &'static str,
    ) -> impl FnOnce(aws_sdk_autoscaling::error::SdkError<E, R>) -> ServiceError + '_
    where
        E: aws_sdk_autoscaling::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + crate::error::HasStatus,
    {
        move |e| ServiceError::aws("Auto Scaling", action, &self.instance_id, e)
    }

    /// Finds this instance's group and terminating hook. `Ok(None)` when it is in no group.
    pub async fn discover(
        client: aws_sdk_autoscaling::Client,
        instance_id: &str,
        fallback_heartbeat: u64,
    ) -> Result<Option<Membership>, ServiceError> {
        let out = client
            .describe_auto_scaling_instances()
            .instance_ids(instance_id)
            .send()
            .await
            .map_err(|e| {
                ServiceError::aws(
                    "Auto Scaling",
                    "DescribeAutoScalingInstances",
                    instance_id,
                    e,
                )
            })?;
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
            .map_err(|e| ServiceError::aws("Auto Scaling", "DescribeLifecycleHooks", &group, e))?;
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
}

impl Membership {
    /// Takes this instance out of the group and lowers the desired capacity with it
    /// (`TerminateInstanceInAutoScalingGroup` with `ShouldDecrementDesiredCapacity`), so the
    /// group does not launch a replacement. The dead-man's last resort for an instance whose
    /// daemon stopped: a stopped or powered-off member would be replaced, again and again.
    pub async fn leave_for_good(&self) -> Result<(), ServiceError> {
        self.client
            .terminate_instance_in_auto_scaling_group()
            .instance_id(&self.instance_id)
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .map(|_| ())
            .map_err(self.err("TerminateInstanceInAutoScalingGroup"))
    }
}

impl Fleet for Membership {
    fn heartbeat_every(&self) -> u64 {
        self.heartbeat_every
    }

    async fn protect(&self, on: bool) -> Result<(), ServiceError> {
        self.client
            .set_instance_protection()
            .auto_scaling_group_name(&self.group)
            .instance_ids(&self.instance_id)
            .protected_from_scale_in(on)
            .send()
            .await
            .map(|_| ())
            .map_err(self.err("SetInstanceProtection"))
    }

    async fn heartbeat(&self) -> Result<(), ServiceError> {
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
            .map_err(self.err("RecordLifecycleActionHeartbeat"))
    }

    async fn complete(&self) -> Result<(), ServiceError> {
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
            .map_err(self.err("CompleteLifecycleAction"))
    }

    async fn mark_unhealthy(&self) -> Result<(), ServiceError> {
        self.client
            .set_instance_health()
            .instance_id(&self.instance_id)
            .health_status("Unhealthy")
            .should_respect_grace_period(false)
            .send()
            .await
            .map(|_| ())
            .map_err(self.err("SetInstanceHealth"))
    }

    async fn group(&self) -> Result<Option<GroupView>, ServiceError> {
        let out = self
            .client
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.group)
            .send()
            .await
            .map_err(self.err("DescribeAutoScalingGroups"))?;
        let Some(g) = out.auto_scaling_groups().first() else {
            return Ok(None);
        };
        let me = g
            .instances()
            .iter()
            .find(|i| i.instance_id() == Some(self.instance_id.as_str()));
        Ok(Some(GroupView {
            desired: g.desired_capacity().unwrap_or(0),
            min: g.min_size().unwrap_or(0),
            protected: g
                .instances()
                .iter()
                .filter(|i| i.protected_from_scale_in() == Some(true))
                .count(),
            in_service: me.is_some_and(|i| i.lifecycle_state() == Some(&LifecycleState::InService)),
        }))
    }

    /// `SetDesiredCapacity`, honouring the group's cooldown. Not atomic with a concurrent raise
    /// by janitorctl (read, then set); a raise lost that way is made good by the queue-depth
    /// alarm, which adds capacity while messages wait.
    async fn lower_desired(&self, from: i32) -> Result<(), ServiceError> {
        self.client
            .set_desired_capacity()
            .auto_scaling_group_name(&self.group)
            .desired_capacity(from - 1)
            .honor_cooldown(false)
            .send()
            .await
            .map(|_| ())
            .map_err(self.err("SetDesiredCapacity"))
    }
}
