//! The Auto Scaling group and the queues, as ctl sees them: describe, scale, stop.

use aws_sdk_autoscaling::Client as Asg;
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use crate::CtlError;

#[derive(Debug, Clone, Serialize)]
pub struct InstanceView {
    pub instance_id: String,
    pub lifecycle_state: String,
    pub health: String,
    pub protected_from_scale_in: bool,
    pub instance_type: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub name: String,
    pub min_size: i32,
    pub max_size: i32,
    pub desired_capacity: i32,
    pub instances: Vec<InstanceView>,
}

impl GroupView {
    pub fn in_service(&self) -> Vec<&InstanceView> {
        self.instances
            .iter()
            .filter(|i| i.lifecycle_state == "InService")
            .collect()
    }

    pub fn protected(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| i.protected_from_scale_in)
            .count()
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct QueueDepth {
    pub waiting: u64,
    pub in_flight: u64,
}

#[derive(Clone)]
pub struct Fleet {
    pub asg: Asg,
    pub name: String,
}

/// Turns an SDK error into a failure saying what was being done.
fn aws_err<E, R>(
    action: &'static str,
    what: String,
) -> impl FnOnce(aws_sdk_autoscaling::error::SdkError<E, R>) -> CtlError
where
    E: aws_sdk_autoscaling::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + janitor_services::error::HasStatus,
{
    move |e| CtlError::Service {
        source: janitor_services::error::ServiceError::aws("Auto Scaling", action, &what, e),
        context: what,
    }
}

/// Turns an SQS error into a failure saying what was being done.
pub fn sqs_err<E, R>(
    action: &'static str,
    url: &str,
    context: String,
) -> impl FnOnce(aws_sdk_sqs::error::SdkError<E, R>) -> CtlError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + janitor_services::error::HasStatus,
{
    let url = url.to_string();
    move |e| CtlError::Service {
        context,
        source: janitor_services::error::ServiceError::aws("SQS", action, url, e),
    }
}

impl Fleet {
    pub async fn describe(&self) -> Result<GroupView, CtlError> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.name)
            .send()
            .await
            .map_err(aws_err(
                "DescribeAutoScalingGroups",
                format!("cannot describe the Auto Scaling group {}", self.name),
            ))?;
        let g = out.auto_scaling_groups().first().ok_or_else(|| {
            CtlError::Usage(format!(
                "no Auto Scaling group named `{}` (check asg_name)",
                self.name
            ))
        })?;
        Ok(GroupView {
            name: self.name.clone(),
            min_size: g.min_size().unwrap_or(0),
            max_size: g.max_size().unwrap_or(0),
            desired_capacity: g.desired_capacity().unwrap_or(0),
            instances: g
                .instances()
                .iter()
                .map(|i| InstanceView {
                    instance_id: i.instance_id().unwrap_or_default().to_string(),
                    lifecycle_state: i
                        .lifecycle_state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    health: i.health_status().unwrap_or_default().to_string(),
                    protected_from_scale_in: i.protected_from_scale_in().unwrap_or(false),
                    instance_type: i.instance_type().map(str::to_string),
                })
                .collect(),
        })
    }

    pub async fn set_desired(&self, n: i32) -> Result<(), CtlError> {
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(&self.name)
            .desired_capacity(n)
            .honor_cooldown(false)
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err(
                "SetDesiredCapacity",
                format!("cannot set the desired capacity of {} to {n}", self.name),
            ))
    }

    /// Raises the desired capacity to `target` (capped at the group's maximum), never lowering it.
    /// Returns (before, after).
    pub async fn raise_to(&self, target: i32) -> Result<(i32, i32), CtlError> {
        let g = self.describe().await?;
        let want = target.min(g.max_size);
        if want <= g.desired_capacity {
            return Ok((g.desired_capacity, g.desired_capacity));
        }
        self.set_desired(want).await?;
        Ok((g.desired_capacity, want))
    }

    pub async fn unprotect(&self, ids: &[String]) -> Result<(), CtlError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.asg
            .set_instance_protection()
            .auto_scaling_group_name(&self.name)
            .set_instance_ids(Some(ids.to_vec()))
            .protected_from_scale_in(false)
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err(
                "SetInstanceProtection",
                "cannot remove scale-in protection".to_string(),
            ))
    }

    /// Lowers the minimum to 0 when needed, so the desired capacity can reach 0.
    pub async fn zero(&self, g: &GroupView) -> Result<(), CtlError> {
        if g.min_size > 0 {
            self.asg
                .update_auto_scaling_group()
                .auto_scaling_group_name(&self.name)
                .min_size(0)
                .send()
                .await
                .map_err(aws_err(
                    "UpdateAutoScalingGroup",
                    "cannot lower the group's minimum to 0".to_string(),
                ))?;
        }
        self.set_desired(0).await
    }

    pub async fn terminate(&self, id: &str) -> Result<(), CtlError> {
        self.asg
            .terminate_instance_in_auto_scaling_group()
            .instance_id(id)
            .should_decrement_desired_capacity(false)
            .send()
            .await
            .map(|_| ())
            .map_err(aws_err(
                "TerminateInstanceInAutoScalingGroup",
                format!("cannot terminate {id}"),
            ))
    }
}

/// Waiting and in-flight counts of a queue.
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<QueueDepth, CtlError> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| CtlError::Service {
            context: format!("cannot read the depth of {url}"),
            source: janitor_services::error::ServiceError::aws("SQS", "GetQueueAttributes", url, e),
        })?;
    let get = |a: QueueAttributeName| {
        out.attributes()
            .and_then(|m| m.get(&a))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(QueueDepth {
        waiting: get(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    })
}

/// `min(max, ceil(backlog / jobs_per_worker))`, never below the busy (protected) instances.
pub fn auto_desired(backlog: u64, jobs_per_worker: u32, max: i32, protected: usize) -> i32 {
    let per = u64::from(jobs_per_worker.max(1));
    let want = i32::try_from(backlog.div_ceil(per))
        .unwrap_or(i32::MAX)
        .min(max);
    want.max(i32::try_from(protected).unwrap_or(i32::MAX))
        .max(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn auto_desired_table() {
        // (backlog, jobs_per_worker, max, protected) -> desired
        let cases = [
            ((0, 1, 10, 0), 0),
            ((3, 1, 10, 0), 3),
            ((30, 1, 10, 0), 10),
            ((5, 2, 10, 0), 3),
            ((0, 1, 10, 2), 2),
            ((1, 1, 10, 4), 4),
            ((7, 0, 10, 0), 7),
        ];
        for ((backlog, per, max, protected), want) in cases {
            assert_eq!(
                super::auto_desired(backlog, per, max, protected),
                want,
                "{backlog} {per} {max} {protected}"
            );
        }
    }
}
