# No inbound port, ever: operators use SSM Session Manager. Outbound HTTPS (AWS APIs, registries,
# git) and HTTP (package mirrors the builds use).
resource "aws_security_group" "instances" {
  name        = "${local.name}-instances"
  description = "janitord instances: no ingress; egress for AWS APIs, registries and package mirrors"
  vpc_id      = var.vpc_id

  egress {
    description = "HTTPS: AWS APIs, container registries, git"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }

  egress {
    description = "HTTP: package mirrors used by repository builds"
    from_port   = 80
    to_port     = 80
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# janitord's settings on an instance of each pool: the pool's own queue, and a GPU expected
# only where the pool has one.
locals {
  janitord_toml = {
    for name, p in local.pools : name => <<-TOML
      queue_url = "${aws_sqs_queue.jobs[name].url}"
      bucket = "${aws_s3_bucket.ledger.bucket}"
      log_group = "${local.log_group}"
      cache_dir = "/var/lib/janitor"
      require_cache_volume = true
      expect_gpus = ${p.gpu}
      heartbeat_file = "/var/lib/janitor/janitord.heartbeat"
      # The shipped agent is pulled into the cache at start (a first fix pays no pull) and
      # evicted last.
      prefetch_images = ["${aws_ecr_repository.agent.repository_url}:latest"]
      default_agent_image = "${aws_ecr_repository.agent.repository_url}:latest"
      pinned_images = ["${aws_ecr_repository.agent.repository_url}:latest"]
      %{if var.status_target_url != ""~}
      status_target_url = "${var.status_target_url}"
      %{endif~}
      %{if local.bedrock~}
      agent_bedrock_role_arn = "arn:${data.aws_partition.current.partition}:iam::${local.account_id}:role/${local.name}-agent-bedrock"
      agent_bedrock_region = "${var.region}"
      %{endif~}
    TOML
  }
}

resource "aws_launch_template" "pool" {
  for_each      = local.pools
  name_prefix   = "${local.name}-${each.key}-"
  image_id      = each.value.ami_id
  instance_type = each.value.instance_type
  ebs_optimized = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.instance.arn
  }

  # IMDSv2 only, one hop: containers cannot reach the instance's credentials.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  monitoring {
    enabled = true
  }

  network_interfaces {
    associate_public_ip_address = var.associate_public_ip
    security_groups             = [aws_security_group.instances.id]
    delete_on_termination       = true
  }

  block_device_mappings {
    device_name = "/dev/sda1"
    ebs {
      volume_type           = "gp3"
      volume_size           = var.root_volume_gb
      encrypted             = true
      delete_on_termination = true
    }
  }

  # The Docker layer cache. Kept while the instance waits Stopped in the warm pool.
  block_device_mappings {
    device_name = "/dev/sdf"
    ebs {
      volume_type           = "gp3"
      volume_size           = each.value.cache_volume_gb
      iops                  = 3000
      throughput            = var.cache_volume_throughput
      encrypted             = true
      delete_on_termination = true
    }
  }

  user_data = base64encode(<<-EOT
    #!/bin/bash
    install -d -m 0755 /etc/janitor
    cat > /etc/janitor/janitord.toml <<'TOML'
    ${local.janitord_toml[each.key]}
    TOML
    systemctl restart janitord.service
  EOT
  )

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.name}-${each.key}", JanitorPool = each.key })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = "${local.name}-${each.key}", JanitorPool = each.key })
  }
}

resource "aws_autoscaling_group" "pool" {
  for_each              = local.pools
  name                  = "${local.name}-${each.key}"
  min_size              = 0
  max_size              = each.value.max_instances
  desired_capacity      = 0
  vpc_zone_identifier   = var.subnet_ids
  health_check_type     = "EC2"
  protect_from_scale_in = false
  capacity_rebalance    = var.spot
  # AZRebalance terminates instances to even out zones, protected or not: a busy one too.
  suspended_processes = ["AZRebalance"]
  # Group metrics for the dashboard and the alarms (instances by state, desired, warm pool).
  enabled_metrics = [
    "GroupDesiredCapacity", "GroupInServiceInstances", "GroupPendingInstances",
    "GroupTerminatingInstances", "GroupTotalInstances", "WarmPoolWarmedCapacity",
    "WarmPoolTotalCapacity",
  ]

  # A new AMI (a new launch template version) replaces the instances, stopped warm-pool ones
  # included; busy instances are protected and drain on the hook, so none loses its job.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage       = 0
      skip_matching                = true
      scale_in_protected_instances = "Wait"
    }
  }

  dynamic "launch_template" {
    for_each = var.spot ? [] : [1]
    content {
      id      = aws_launch_template.pool[each.key].id
      version = aws_launch_template.pool[each.key].latest_version
    }
  }

  # Spot through a mixed-instances policy. AWS refuses a warm pool on such a group.
  dynamic "mixed_instances_policy" {
    for_each = var.spot ? [1] : []
    content {
      instances_distribution {
        on_demand_base_capacity                  = 0
        on_demand_percentage_above_base_capacity = 0
        spot_allocation_strategy                 = "price-capacity-optimized"
      }
      launch_template {
        launch_template_specification {
          launch_template_id = aws_launch_template.pool[each.key].id
          version            = aws_launch_template.pool[each.key].latest_version
        }
        dynamic "override" {
          for_each = each.value.spot_instance_types
          content {
            instance_type = override.value
          }
        }
      }
    }
  }

  # Stopped instances keep their cache volume between runs ("provision or start").
  dynamic "warm_pool" {
    for_each = var.warm_pool && !var.spot ? [1] : []
    content {
      pool_state                  = "Stopped"
      min_size                    = 0
      max_group_prepared_capacity = min(each.value.warm_pool_max_prepared, each.value.max_instances)
      instance_reuse_policy {
        reuse_on_scale_in = true
      }
    }
  }

  # janitord drains on this hook: finishes or hands back its job, then completes it.
  initial_lifecycle_hook {
    name                 = "janitor-drain"
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = var.lifecycle_heartbeat_timeout_seconds
    default_result       = "CONTINUE"
  }

  tag {
    key                 = "Name"
    value               = "${local.name}-${each.key}"
    propagate_at_launch = true
  }

  tag {
    key                 = "JanitorPool"
    value               = each.key
    propagate_at_launch = true
  }

  # janitorctl raises the desired capacity and the daemons lower it; Terraform must not undo that.
  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

# The backstop: when something other than janitorctl enqueues, the queue depth scales out.
# Only upward changes (ChangeInCapacity, every step positive): it never lowers the desired
# capacity that janitorctl set; the daemons bring it down when idle.
resource "aws_autoscaling_policy" "queue_backlog" {
  for_each                  = local.pools
  name                      = "${local.name}-${each.key}-queue-backlog"
  autoscaling_group_name    = aws_autoscaling_group.pool[each.key].name
  policy_type               = "StepScaling"
  adjustment_type           = "ChangeInCapacity"
  estimated_instance_warmup = 300

  step_adjustment {
    metric_interval_lower_bound = 0
    metric_interval_upper_bound = 3
    scaling_adjustment          = 1
  }

  step_adjustment {
    metric_interval_lower_bound = 3
    metric_interval_upper_bound = 10
    scaling_adjustment          = min(3, each.value.max_instances)
  }

  step_adjustment {
    metric_interval_lower_bound = 10
    scaling_adjustment          = each.value.max_instances
  }
}

resource "aws_cloudwatch_metric_alarm" "queue_backlog" {
  for_each            = local.pools
  alarm_name          = "${local.name}-${each.key}-queue-backlog"
  alarm_description   = "Jobs are waiting in pool ${each.key}: scale its group out (from zero too)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = aws_sqs_queue.jobs[each.key].name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 2
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_autoscaling_policy.queue_backlog[each.key].arn]
}

resource "aws_budgets_budget" "idle" {
  # The account whose costs it watches, named rather than left to the provider's own lookup.
  account_id   = local.account_id
  name         = "${local.name}-daily"
  budget_type  = "COST"
  limit_amount = tostring(var.daily_budget_usd)
  limit_unit   = "USD"
  time_unit    = "DAILY"

  cost_filter {
    name = "TagKeyValue"
    # `user:<tag key>$<tag value>`, the `$` literal: user:janitor$dev.
    values = [format("user:janitor$%s", var.env)]
  }

  # Over the daily budget: to the alerts topic (and to budget_email when set).
  notification {
    comparison_operator        = "GREATER_THAN"
    threshold                  = 100
    threshold_type             = "PERCENTAGE"
    notification_type          = "ACTUAL"
    subscriber_sns_topic_arns  = [aws_sns_topic.alerts.arn]
    subscriber_email_addresses = var.budget_email == "" ? null : [var.budget_email]
  }
}
