# `make infra-apply` writes these to infra/env/<ENV>.json, where janitorctl reads its settings.
output "queue_url" {
  value = aws_sqs_queue.jobs.url
}

output "dlq_url" {
  value = aws_sqs_queue.dead_letter.url
}

output "bucket" {
  value = aws_s3_bucket.ledger.bucket
}

output "log_group" {
  value = aws_cloudwatch_log_group.runner.name
}

output "asg_name" {
  value = aws_autoscaling_group.gpu.name
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
