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
