# The instance role: exactly the actions janitord uses, each scoped as tightly as AWS allows.
# SSM Session Manager gets its own five actions (SessionManager below), not the managed
# AmazonSSMManagedInstanceCore policy, whose ssm:GetParameter(s) on "*" would let the
# instance read every parameter of the account, not only the janitor/ names.

locals {
  # Each pool's group by its exact name (a wildcard would reach another environment's).
  asg_arns = [for k, _ in local.pools : "arn:${data.aws_partition.current.partition}:autoscaling:${var.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.name}-${k}"]
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "janitord" {
  statement {
    sid       = "JobsQueue"
    actions   = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"]
    resources = [for q in aws_sqs_queue.jobs : q.arn]
  }

  statement {
    sid     = "Ledger"
    actions = ["s3:PutObject"]
    resources = [
      "${aws_s3_bucket.ledger.arn}/janitor-reports/*",
      "${aws_s3_bucket.ledger.arn}/janitor-cache/*",
    ]
  }

  # A report replaces a stored one only after reading its attempt (conditional writes):
  # reports and history entries only, not the rest of the ledger.
  statement {
    sid     = "LedgerReportsRead"
    actions = ["s3:GetObject"]
    resources = [
      "${aws_s3_bucket.ledger.arn}/janitor-reports/runs/*",
      "${aws_s3_bucket.ledger.arn}/janitor-reports/repos/*",
    ]
  }

  # Job secrets (workers-config `secrets:`), fetched just in time: only the janitor/ names.
  statement {
    sid       = "JobSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = ["arn:${data.aws_partition.current.partition}:secretsmanager:${var.region}:${local.account_id}:secret:janitor/*"]
  }

  statement {
    sid       = "JobParameters"
    actions   = ["ssm:GetParameter"]
    resources = ["arn:${data.aws_partition.current.partition}:ssm:${var.region}:${local.account_id}:parameter/janitor/*"]
  }

  # SecureString parameters under the account's default aws/ssm key, decrypted through SSM only.
  statement {
    sid       = "JobParametersDecrypt"
    actions   = ["kms:Decrypt"]
    resources = ["arn:${data.aws_partition.current.partition}:kms:${var.region}:${local.account_id}:alias/aws/ssm"]
    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${var.region}.amazonaws.com"]
    }
  }

  statement {
    sid       = "JobOutput"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.runner.arn}:log-stream:*"]
  }

  statement {
    sid = "EcrToken"
    # AWS requires "*": GetAuthorizationToken has no resource-level permissions.
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid       = "EcrPull"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = ["arn:${data.aws_partition.current.partition}:ecr:${var.region}:${local.account_id}:repository/${var.agent_ecr_repository}"]
  }

  statement {
    sid = "OwnGroup"
    # Idle scale-in lowers the desired capacity; the group's own scale-in then picks an idle
    # (unprotected) instance and, with the warm pool's reuse policy, stops it into the pool with
    # its cache volume. An API terminate would lose the volume, so it is not allowed.
    actions = [
      "autoscaling:CompleteLifecycleAction",
      "autoscaling:RecordLifecycleActionHeartbeat",
      "autoscaling:SetInstanceProtection",
      "autoscaling:SetInstanceHealth",
      "autoscaling:SetDesiredCapacity",
      # Only `janitord leave`, the dead-man timer's last resort for a stuck instance.
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = local.asg_arns
  }

  # The SSM agent registers its own instance; no ssm:GetParameter(s) here: parameters are
  # JobParameters' janitor/ names only.
  statement {
    sid       = "SsmAgent"
    actions   = ["ssm:UpdateInstanceInformation"]
    resources = ["arn:${data.aws_partition.current.partition}:ec2:${var.region}:${local.account_id}:instance/*"]
  }

  statement {
    sid = "SessionManager"
    # AWS requires "*": Session Manager's channels have no resource-level permissions.
    actions = [
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
    ]
    resources = ["*"]
  }

  statement {
    sid = "DescribeGroup"
    # AWS requires "*": the Describe* actions have no resource-level permissions.
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLifecycleHooks",
    ]
    resources = ["*"]
  }
}

# The agent's model access on Bedrock: a role that may only invoke the configured models,
# assumed by janitord for each job (short-lived credentials handed to the agent container,
# which cannot reach the instance role: IMDS hop limit 1).
locals {
  bedrock = length(var.agent_bedrock_models) > 0
  bedrock_model_arns = flatten([for m in var.agent_bedrock_models : [
    "arn:${data.aws_partition.current.partition}:bedrock:*::foundation-model/${m}",
    "arn:${data.aws_partition.current.partition}:bedrock:*:${local.account_id}:inference-profile/${m}",
  ]])
}

data "aws_iam_policy_document" "agent_bedrock_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "AWS"
      identifiers = [aws_iam_role.instance.arn]
    }
  }
}

data "aws_iam_policy_document" "agent_bedrock" {
  statement {
    sid       = "InvokeConfiguredModels"
    actions   = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
    resources = local.bedrock_model_arns
  }
}

resource "aws_iam_role" "agent_bedrock" {
  count                = local.bedrock ? 1 : 0
  name                 = "${local.name}-agent-bedrock"
  assume_role_policy   = data.aws_iam_policy_document.agent_bedrock_trust.json
  max_session_duration = 3600
}

resource "aws_iam_role_policy" "agent_bedrock" {
  count  = local.bedrock ? 1 : 0
  name   = "invoke-configured-models"
  role   = aws_iam_role.agent_bedrock[0].id
  policy = data.aws_iam_policy_document.agent_bedrock.json
}

# janitord may assume only that role.
data "aws_iam_policy_document" "assume_agent_bedrock" {
  statement {
    sid       = "AssumeAgentBedrockRole"
    actions   = ["sts:AssumeRole"]
    resources = ["arn:${data.aws_partition.current.partition}:iam::${local.account_id}:role/${local.name}-agent-bedrock"]
  }
}

resource "aws_iam_role_policy" "assume_agent_bedrock" {
  count  = local.bedrock ? 1 : 0
  name   = "assume-agent-bedrock"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.assume_agent_bedrock.json
}

resource "aws_iam_role" "instance" {
  name               = "${local.name}-instance"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

resource "aws_iam_role_policy" "janitord" {
  name   = "janitord"
  role   = aws_iam_role.instance.id
  policy = data.aws_iam_policy_document.janitord.json
}

resource "aws_iam_instance_profile" "instance" {
  name = "${local.name}-instance"
  role = aws_iam_role.instance.name
}
