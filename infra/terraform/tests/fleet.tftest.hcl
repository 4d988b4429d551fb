# Plan-time checks with a mocked AWS provider (no account, no network): `make infra-check`
# runs them with `terraform test`.

mock_provider "aws" {
  # Documents the provider would render; mocks would otherwise be random strings.
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }
  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }
}

variables {
  env        = "dev"
  vpc_id     = "vpc-0123456789abcdef0"
  subnet_ids = ["subnet-0123456789abcdef0"]
  ami_id     = "ami-0123456789abcdef0"
}

run "the_backlog_policy_only_adds_capacity" {
  command = plan

  assert {
    condition     = aws_autoscaling_policy.queue_backlog.adjustment_type == "ChangeInCapacity"
    error_message = "the backstop must not set an exact capacity: it would override janitorctl's"
  }
  assert {
    condition     = alltrue([for s in aws_autoscaling_policy.queue_backlog.step_adjustment : s.scaling_adjustment > 0])
    error_message = "every step of the backstop adds capacity"
  }
  assert {
    condition     = max([for s in aws_autoscaling_policy.queue_backlog.step_adjustment : s.scaling_adjustment]...) <= var.max_concurrent_instances
    error_message = "no step adds more than the group's maximum"
  }
}

run "the_budget_filters_on_the_janitor_tag" {
  command = plan

  assert {
    condition     = one([for f in aws_budgets_budget.idle.cost_filter : f.values if f.name == "TagKeyValue"]) == tolist(["user:janitor$dev"])
    error_message = "the budget's filter must be user:janitor$<env>"
  }
}

run "tags_reach_instances_and_volumes" {
  command = plan

  assert {
    condition = alltrue([
      for t in aws_launch_template.gpu.tag_specifications :
      t.tags["janitor"] == "dev" && t.tags["Project"] == "janitor-fleet"
    ])
    error_message = "instances and volumes launched by the group carry the cost tags"
  }
  assert {
    condition     = toset([for t in aws_launch_template.gpu.tag_specifications : t.resource_type]) == toset(["instance", "volume"])
    error_message = "both instances and volumes are tagged at launch"
  }
}

run "the_warm_pool_keeps_stopped_instances_for_reuse" {
  command = plan

  assert {
    condition     = one(aws_autoscaling_group.gpu.warm_pool).pool_state == "Stopped"
    error_message = "the warm pool keeps instances stopped"
  }
  assert {
    condition     = one(one(aws_autoscaling_group.gpu.warm_pool).instance_reuse_policy).reuse_on_scale_in
    error_message = "scaled-in instances go back to the pool with their cache volume"
  }
  assert {
    condition     = one(aws_autoscaling_group.gpu.warm_pool).max_group_prepared_capacity == 3
    error_message = "at most 3 stopped instances by default (the idle-cost target)"
  }
}

run "the_group_keeps_busy_instances_and_refreshes_for_a_new_ami" {
  command = plan

  assert {
    condition     = contains(aws_autoscaling_group.gpu.suspended_processes, "AZRebalance")
    error_message = "AZRebalance would terminate busy instances"
  }
  assert {
    condition     = one(aws_autoscaling_group.gpu.instance_refresh).strategy == "Rolling"
    error_message = "a new AMI rolls through the group"
  }
  assert {
    condition     = one(one(aws_autoscaling_group.gpu.instance_refresh).preferences).scale_in_protected_instances == "Wait"
    error_message = "a refresh waits for busy (protected) instances instead of replacing them mid-job"
  }
  assert {
    condition     = contains(aws_autoscaling_group.gpu.enabled_metrics, "GroupInServiceInstances")
    error_message = "group metrics feed the dashboard"
  }
}

run "spot_has_no_warm_pool" {
  command = plan

  variables {
    spot = true
  }

  assert {
    condition     = length(aws_autoscaling_group.gpu.warm_pool) == 0
    error_message = "AWS allows no warm pool with a mixed-instances policy"
  }
}

run "operators_are_paged_on_dead_letters_idle_instances_and_the_budget" {
  command = plan

  variables {
    alert_email       = "ops@example.com"
    github_repository = "runpod-workers/janitor-fleet"
  }

  assert {
    condition     = aws_cloudwatch_metric_alarm.dead_letters.dimensions["QueueName"] == "janitor-dev-jobs-dlq"
    error_message = "the dead-letter alarm watches the dead-letter queue"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.idle_instances.evaluation_periods == 15
    error_message = "idle past 15 minutes by default"
  }
  assert {
    condition     = length([for q in aws_cloudwatch_metric_alarm.idle_instances.metric_query : q if q.return_data == true]) == 1
    error_message = "the idle alarm returns one expression"
  }
  assert {
    condition     = length(aws_sns_topic_subscription.alerts_email) == 1
    error_message = "alert_email subscribes to the topic"
  }
  assert {
    condition     = length(one(aws_budgets_budget.idle.notification).subscriber_sns_topic_arns) == 1
    error_message = "the budget pages through the topic"
  }
  assert {
    condition     = aws_ecr_repository.agent.image_scanning_configuration[0].scan_on_push
    error_message = "the agent image is scanned on push"
  }
  assert {
    condition     = length(aws_iam_role.release) == 1
    error_message = "a release role for the repository's workflow"
  }
}

run "no_bedrock_role_without_models" {
  command = plan

  assert {
    condition     = length(aws_iam_role.agent_bedrock) == 0 && length(aws_iam_role_policy.assume_agent_bedrock) == 0
    error_message = "without agent_bedrock_models there is no Bedrock role, and janitord may assume nothing"
  }
}

run "bedrock_models_get_an_agent_role_janitord_assumes" {
  command = plan

  variables {
    agent_bedrock_models = ["anthropic.claude-sonnet-4-5-20250929-v1:0"]
  }

  assert {
    condition     = length(aws_iam_role.agent_bedrock) == 1 && aws_iam_role.agent_bedrock[0].max_session_duration == 3600
    error_message = "one agent role, its sessions at most an hour"
  }
  assert {
    condition     = length(aws_iam_role_policy.assume_agent_bedrock) == 1
    error_message = "the instance role may assume the agent role"
  }
}
