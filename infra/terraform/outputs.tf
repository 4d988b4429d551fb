# `make infra-apply` writes these to infra/env/<ENV>.json, where janitorctl reads its settings.
# `pools`: each pool's queue, dead-letter queue, group and shape, which janitorctl routes by.
output "pools" {
  value = {
    for name, p in local.pools : name => {
      queue_url     = aws_sqs_queue.jobs[name].url
      dlq_url       = aws_sqs_queue.dead_letter[name].url
      asg_name      = aws_autoscaling_group.pool[name].name
      instance_type = p.instance_type
      gpu_memory_gb = p.gpu_memory_gb
      max_instances = p.max_instances
    }
  }
}

output "bucket" {
  value = aws_s3_bucket.ledger.bucket
}

output "log_group" {
  value = aws_cloudwatch_log_group.runner.name
}

output "region" {
  value = var.region
}

output "instance_role" {
  value = aws_iam_role.instance.name
}

output "alerts_topic_arn" {
  value = aws_sns_topic.alerts.arn
}

output "agent_repository_url" {
  value = aws_ecr_repository.agent.repository_url
}

output "release_role_arn" {
  description = "Set as the repository variable AWS_RELEASE_ROLE_ARN for .github/workflows/release.yml."
  value       = one(aws_iam_role.release[*].arn)
}
