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
    condition     = alltrue([for p in aws_autoscaling_policy.queue_backlog : p.adjustment_type == "ChangeInCapacity"])
    error_message = "the backstop must not set an exact capacity: it would override janitorctl's"
  }
  assert {
    condition     = alltrue(flatten([for p in aws_autoscaling_policy.queue_backlog : [for s in p.step_adjustment : s.scaling_adjustment > 0]]))
    error_message = "every step of the backstop adds capacity"
  }
  assert {
    condition     = alltrue([for k, p in aws_autoscaling_policy.queue_backlog : max([for s in p.step_adjustment : s.scaling_adjustment]...) <= aws_autoscaling_group.pool[k].max_size])
    error_message = "no step adds more than its group's maximum"
  }
}

run "three_pools_by_default_each_with_its_queue_group_and_alarms" {
  command = plan

  assert {
    condition     = toset(keys(aws_autoscaling_group.pool)) == toset(["cpu", "gpu-24", "gpu-48"])
    error_message = "the default pools are cpu, gpu-24 and gpu-48"
  }
  assert {
    condition     = aws_launch_template.pool["cpu"].instance_type == "c7i.xlarge" && aws_launch_template.pool["gpu-24"].instance_type == "g5.xlarge" && aws_launch_template.pool["gpu-48"].instance_type == "g6e.xlarge"
    error_message = "each pool's launch template starts its instance type"
  }
  assert {
    condition     = aws_sqs_queue.jobs["gpu-48"].name == "janitor-dev-gpu-48-jobs" && aws_sqs_queue.dead_letter["gpu-48"].name == "janitor-dev-gpu-48-jobs-dlq"
    error_message = "each pool has its own queue and dead-letter queue"
  }
  assert {
    condition     = aws_autoscaling_group.pool["gpu-48"].max_size == 4 && aws_autoscaling_group.pool["cpu"].max_size == 10
    error_message = "a pool's max_instances, else max_concurrent_instances"
  }
  assert {
    condition     = [for k in ["cpu", "gpu-24", "gpu-48"] : one(aws_autoscaling_group.pool[k].warm_pool).max_group_prepared_capacity] == [1, 3, 1]
    error_message = "1 + 3 + 1 stopped instances by default: 550 GB of gp3 idle, inside the $2 a day target"
  }
  assert {
    condition     = alltrue([for k, g in aws_autoscaling_group.pool : g.min_size == 0 && g.name == "janitor-dev-${k}"])
    error_message = "every pool scales from zero"
  }
  assert {
    condition     = alltrue([for k, g in aws_autoscaling_group.pool : one([for t in g.tag : t.value if t.key == "JanitorPool"]) == k])
    error_message = "a pool's instances carry its name"
  }
  assert {
    condition     = alltrue([for k in ["cpu", "gpu-24", "gpu-48"] : aws_cloudwatch_metric_alarm.dead_letters[k].dimensions["QueueName"] == "janitor-dev-${k}-jobs-dlq" && aws_cloudwatch_metric_alarm.queue_backlog[k].dimensions["QueueName"] == "janitor-dev-${k}-jobs"])
    error_message = "each pool's dead letters and backlog are watched on its own queues"
  }
  assert {
    condition     = length(aws_cloudwatch_metric_alarm.idle_instances) == 3
    error_message = "an idle alarm per pool"
  }
  assert {
    condition     = length(jsondecode(aws_cloudwatch_dashboard.fleet.dashboard_body).widgets) == 3 * 2 + 4
    error_message = "the dashboard has a row (queue, instances) per pool plus the fleet's four widgets"
  }
  assert {
    condition     = output.pools["gpu-24"].gpu_memory_gb == 24 && output.pools["cpu"].instance_type == "c7i.xlarge" && output.pools["gpu-48"].max_instances == 4
    error_message = "the pools output carries what janitorctl routes by"
  }
}

run "an_added_pool_gets_its_own_group_queue_and_alarms" {
  command = plan

  variables {
    pools = {
      "cpu"    = { instance_type = "c7i.xlarge", gpu_memory_gb = 0 }
      "gpu-24" = { instance_type = "g5.xlarge", gpu_memory_gb = 24 }
      "gpu-48" = { instance_type = "g6e.xlarge", gpu_memory_gb = 48, max_instances = 4 }
      "gpu-80" = { instance_type = "p4de.24xlarge", gpu_memory_gb = 80, max_instances = 1, warm_pool_max_prepared = 0 }
    }
  }

  assert {
    condition     = aws_autoscaling_group.pool["gpu-80"].name == "janitor-dev-gpu-80" && aws_autoscaling_group.pool["gpu-80"].max_size == 1
    error_message = "the added pool has its group"
  }
  assert {
    condition     = aws_sqs_queue.jobs["gpu-80"].name == "janitor-dev-gpu-80-jobs" && aws_sqs_queue.dead_letter["gpu-80"].name == "janitor-dev-gpu-80-jobs-dlq"
    error_message = "the added pool has its queues"
  }
  assert {
    condition     = aws_launch_template.pool["gpu-80"].instance_type == "p4de.24xlarge"
    error_message = "the added pool has its launch template"
  }
  assert {
    condition     = aws_cloudwatch_metric_alarm.dead_letters["gpu-80"].alarm_name == "janitor-dev-gpu-80-dead-letters" && aws_cloudwatch_metric_alarm.idle_instances["gpu-80"].alarm_name == "janitor-dev-gpu-80-idle-instances"
    error_message = "the added pool has its alarms"
  }
  assert {
    condition     = one(aws_autoscaling_group.pool["gpu-80"].warm_pool).max_group_prepared_capacity == 0
    error_message = "a pool may keep no stopped instance"
  }
}

run "a_pool_name_terraform_cannot_route_is_refused" {
  command = plan

  variables {
    pools = {
      "GPU_48" = { instance_type = "g6e.xlarge", gpu_memory_gb = 48 }
    }
  }

  expect_failures = [var.pools]
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
      for t in aws_launch_template.pool["gpu-24"].tag_specifications :
      t.tags["janitor"] == "dev" && t.tags["Project"] == "janitor-fleet"
    ])
    error_message = "instances and volumes launched by the group carry the cost tags"
  }
  assert {
    condition     = toset([for t in aws_launch_template.pool["gpu-24"].tag_specifications : t.resource_type]) == toset(["instance", "volume"])
    error_message = "both instances and volumes are tagged at launch"
  }
}

run "the_warm_pool_keeps_stopped_instances_for_reuse" {
  command = plan

  assert {
    condition     = one(aws_autoscaling_group.pool["gpu-24"].warm_pool).pool_state == "Stopped"
    error_message = "the warm pool keeps instances stopped"
  }
  assert {
    condition     = one(one(aws_autoscaling_group.pool["gpu-24"].warm_pool).instance_reuse_policy).reuse_on_scale_in
    error_message = "scaled-in instances go back to the pool with their cache volume"
  }
  assert {
    condition     = one(aws_autoscaling_group.pool["gpu-24"].warm_pool).max_group_prepared_capacity == 3
    error_message = "at most 3 stopped instances by default (the idle-cost target)"
  }
}

run "the_group_keeps_busy_instances_and_refreshes_for_a_new_ami" {
  command = plan

  assert {
    condition     = contains(aws_autoscaling_group.pool["gpu-24"].suspended_processes, "AZRebalance")
    error_message = "AZRebalance would terminate busy instances"
  }
  assert {
    condition     = one(aws_autoscaling_group.pool["gpu-24"].instance_refresh).strategy == "Rolling"
    error_message = "a new AMI rolls through the group"
  }
  assert {
    condition     = one(one(aws_autoscaling_group.pool["gpu-24"].instance_refresh).preferences).scale_in_protected_instances == "Wait"
    error_message = "a refresh waits for busy (protected) instances instead of replacing them mid-job"
  }
  assert {
    condition     = contains(aws_autoscaling_group.pool["gpu-24"].enabled_metrics, "GroupInServiceInstances")
    error_message = "group metrics feed the dashboard"
  }
}

run "spot_has_no_warm_pool" {
  command = plan

  variables {
    spot = true
  }

  assert {
    condition     = length(aws_autoscaling_group.pool["gpu-24"].warm_pool) == 0
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
    condition     = aws_cloudwatch_metric_alarm.dead_letters["gpu-24"].dimensions["QueueName"] == "janitor-dev-gpu-24-jobs-dlq"
    error_message = "the dead-letter alarm watches the dead-letter queue"
  }
  assert {
    condition     = alltrue([for a in aws_cloudwatch_metric_alarm.idle_instances : a.evaluation_periods == 15])
    error_message = "idle past 15 minutes by default"
  }
  assert {
    condition     = alltrue([for a in aws_cloudwatch_metric_alarm.idle_instances : length([for q in a.metric_query : q if q.return_data == true]) == 1])
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
