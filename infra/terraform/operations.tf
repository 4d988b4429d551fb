# What operators watch and get paged by: one alerts topic; alarms on the dead-letter queue, on
# instances idle past the shutdown SLA and on the daily budget; a dashboard. Plus the agent
# image's ECR repository and the role GitHub Actions assumes (OIDC) to push to it.

resource "aws_sns_topic" "alerts" {
  #checkov:skip=CKV_AWS_26:CloudWatch alarms and AWS Budgets cannot publish to a topic encrypted with the AWS-managed SNS key, and alerts carry no secret (names and counts).
  name = "${local.name}-alerts"
}

resource "aws_sns_topic_policy" "alerts" {
  arn    = aws_sns_topic.alerts.arn
  policy = data.aws_iam_policy_document.alerts.json
}

data "aws_iam_policy_document" "alerts" {
  statement {
    sid       = "AlarmsAndBudgets"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.alerts.arn]
    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com", "budgets.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_sns_topic_subscription" "alerts_email" {
  count     = var.alert_email == "" ? 0 : 1
  topic_arn = aws_sns_topic.alerts.arn
  protocol  = "email"
  endpoint  = var.alert_email
}

# A message that failed three times: a job nobody will run until someone looks.
resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each            = local.pools
  alarm_name          = "${local.name}-${each.key}-dead-letters"
  alarm_description   = "A job message reached pool ${each.key}'s dead-letter queue (rejected, or failed three times): see janitor-reports/rejected/ and the queue."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.dead_letter[each.key].name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]
}

# Instances in service while the queue has nothing for them, past the idle SLA: the idle
# scale-in did not happen (seed 000: down within 5 minutes of the last job).
resource "aws_cloudwatch_metric_alarm" "idle_instances" {
  for_each            = local.pools
  alarm_name          = "${local.name}-${each.key}-idle-instances"
  alarm_description   = "Instances of pool ${each.key} in service with an empty queue for ${var.idle_alarm_minutes} minutes: the idle scale-in is not happening. Check janitord on them (README: Looking at an instance)."
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  evaluation_periods  = var.idle_alarm_minutes
  datapoints_to_alarm = var.idle_alarm_minutes
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.alerts.arn]

  metric_query {
    id          = "idle"
    expression  = "IF(inservice > 0 AND (visible + inflight) == 0, 1, 0)"
    label       = "idle instances with an empty queue"
    return_data = true
  }
  metric_query {
    id = "inservice"
    metric {
      namespace   = "AWS/AutoScaling"
      metric_name = "GroupInServiceInstances"
      dimensions  = { AutoScalingGroupName = aws_autoscaling_group.pool[each.key].name }
      stat        = "Maximum"
      period      = 60
    }
  }
  metric_query {
    id = "visible"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = aws_sqs_queue.jobs[each.key].name }
      stat        = "Maximum"
      period      = 60
    }
  }
  metric_query {
    id = "inflight"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesNotVisible"
      dimensions  = { QueueName = aws_sqs_queue.jobs[each.key].name }
      stat        = "Maximum"
      period      = 60
    }
  }
}

# One row per pool (its queue and its instances), then the fleet's outcomes, timings, cache
# and charges.
locals {
  pool_names = sort(keys(local.pools))
  pool_rows = flatten([
    for i, name in local.pool_names : [
      {
        type = "metric", x = 0, y = i * 6, width = 12, height = 6
        properties = {
          title  = "Pool ${name}: queue waiting, in flight, dead letters"
          region = var.region
          stat   = "Maximum"
          period = 60
          metrics = [
            ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", aws_sqs_queue.jobs[name].name, { label = "waiting" }],
            [".", "ApproximateNumberOfMessagesNotVisible", ".", ".", { label = "in flight (jobs running)" }],
            [".", "ApproximateNumberOfMessagesVisible", ".", aws_sqs_queue.dead_letter[name].name, { label = "dead letters" }],
          ]
        }
      },
      {
        type = "metric", x = 12, y = i * 6, width = 12, height = 6
        properties = {
          title  = "Pool ${name} (${local.pools[name].instance_type}): instances by state"
          region = var.region
          stat   = "Maximum"
          period = 60
          metrics = [
            ["AWS/AutoScaling", "GroupDesiredCapacity", "AutoScalingGroupName", aws_autoscaling_group.pool[name].name],
            [".", "GroupInServiceInstances", ".", "."],
            [".", "GroupPendingInstances", ".", "."],
            [".", "GroupTerminatingInstances", ".", "."],
            [".", "WarmPoolWarmedCapacity", ".", ".", { label = "warm pool (stopped)" }],
          ]
        }
      },
    ]
  ])
  fleet_row = length(local.pool_names) * 6
}

resource "aws_cloudwatch_dashboard" "fleet" {
  dashboard_name = local.name
  dashboard_body = jsonencode({
    widgets = concat(local.pool_rows, [
      {
        type = "metric", x = 0, y = local.fleet_row, width = 8, height = 6
        properties = {
          title  = "Jobs by outcome"
          region = var.region
          stat   = "Sum"
          period = 3600
          metrics = [for s in ["succeeded", "failed", "timed_out", "interrupted", "error"] :
            ["Janitor", "Jobs", "Status", s, { label = s }]
          ]
        }
      },
      {
        type = "metric", x = 8, y = local.fleet_row, width = 8, height = 6
        properties = {
          title   = "Job duration and queue wait (seconds)"
          region  = var.region
          period  = 3600
          metrics = [["Janitor", "JobDuration", { stat = "p50", label = "duration p50" }], ["Janitor", "JobDuration", { stat = "p90", label = "duration p90" }], ["Janitor", "QueueWait", { stat = "p90", label = "queue wait p90" }]]
        }
      },
      {
        type = "metric", x = 16, y = local.fleet_row, width = 8, height = 6
        properties = {
          title  = "Layer cache hit rate"
          region = var.region
          period = 3600
          metrics = [
            [{ expression = "100 * hits / steps", label = "cached build steps (%)", id = "rate" }],
            ["Janitor", "CacheHits", { stat = "Sum", id = "hits", visible = false }],
            ["Janitor", "CacheSteps", { stat = "Sum", id = "steps", visible = false }],
          ]
        }
      },
      {
        type = "metric", x = 0, y = local.fleet_row + 6, width = 24, height = 6
        properties = {
          title   = "Estimated charges (USD, the account; billing metrics live in us-east-1)"
          region  = "us-east-1"
          stat    = "Maximum"
          period  = 86400
          metrics = [["AWS/Billing", "EstimatedCharges", "Currency", "USD"]]
        }
      },
    ])
  })
}

# The agent image (`make image` pushes `:latest` there; janitord pulls it with its role).
resource "aws_ecr_repository" "agent" {
  #checkov:skip=CKV_AWS_51:`make image` pushes the moving tag `latest` that the configs name; the pushes are the releases' and each is scanned.
  name                 = var.agent_ecr_repository
  image_tag_mutability = "MUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
  }
}

# GitHub Actions' release workflow assumes this role through OIDC (no stored keys) to push
# the agent image; nothing else.
resource "aws_iam_openid_connect_provider" "github" {
  count           = var.github_repository == "" ? 0 : 1
  url             = "https://token.actions.githubusercontent.com"
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = ["6938fd4d98bab03faadb97b34396831e3780aea1", "1c58a3a8518e8759bf075b76b750d4f2df264fcd"]
}

data "aws_iam_policy_document" "release_trust" {
  count = var.github_repository == "" ? 0 : 1
  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]
    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.github[0].arn]
    }
    condition {
      test     = "StringEquals"
      variable = "token.actions.githubusercontent.com:aud"
      values   = ["sts.amazonaws.com"]
    }
    condition {
      test     = "StringLike"
      variable = "token.actions.githubusercontent.com:sub"
      values   = ["repo:${var.github_repository}:ref:refs/tags/*", "repo:${var.github_repository}:ref:refs/heads/main"]
    }
  }
}

data "aws_iam_policy_document" "release" {
  count = var.github_repository == "" ? 0 : 1
  statement {
    sid = "PushTheAgentImage"
    actions = [
      "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
      "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchGetImage", "ecr:DescribeRepositories",
    ]
    resources = [aws_ecr_repository.agent.arn]
  }
  statement {
    sid = "RegistryLogin"
    # AWS requires "*": GetAuthorizationToken has no resource-level permissions.
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
}

resource "aws_iam_role" "release" {
  count              = var.github_repository == "" ? 0 : 1
  name               = "${local.name}-github-release"
  assume_role_policy = data.aws_iam_policy_document.release_trust[0].json
}

resource "aws_iam_role_policy" "release" {
  count  = var.github_repository == "" ? 0 : 1
  name   = "push-agent-image"
  role   = aws_iam_role.release[0].id
  policy = data.aws_iam_policy_document.release[0].json
}
