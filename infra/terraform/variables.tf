variable "env" {
  description = "Environment name (dev, prod); part of every resource name."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.env))
    error_message = "env: 2 to 16 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "vpc_id" {
  description = "VPC of the instances."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the instances (with a NAT gateway or VPC endpoints for SQS, S3, Logs, SSM, ECR and Auto Scaling)."
  type        = list(string)
}

variable "ami_id" {
  description = "The golden AMI from `make ami` (packer/gpu-ami.pkr.hcl)."
  type        = string
}

variable "instance_type" {
  description = "GPU instance type."
  type        = string
  default     = "g5.xlarge"
}

variable "max_concurrent_instances" {
  description = "The group's maximum size: the most GPUs billing at once."
  type        = number
  default     = 10
  validation {
    condition     = var.max_concurrent_instances >= 1 && var.max_concurrent_instances <= 100
    error_message = "max_concurrent_instances: 1 to 100."
  }
}

variable "root_volume_gb" {
  description = "Root volume size (encrypted gp3)."
  type        = number
  default     = 60
}

variable "cache_volume_gb" {
  description = "The Docker layer cache volume (encrypted gp3), mounted at /var/lib/janitor."
  type        = number
  default     = 50
}

variable "associate_public_ip" {
  description = "Give instances a public IP (only for subnets without NAT); no inbound port is ever opened."
  type        = bool
  default     = false
}

variable "spot" {
  description = "Run on spot capacity through a mixed-instances policy. AWS does not allow a warm pool with it, so the cache volume is then lost at scale-in."
  type        = bool
  default     = false
}

variable "spot_instance_types" {
  description = "Instance types the spot policy may use, in order of preference."
  type        = list(string)
  default     = ["g5.xlarge", "g6.xlarge", "g4dn.xlarge"]
}

variable "warm_pool" {
  description = "Keep scaled-in instances Stopped (and their cache volumes) for reuse. Ignored with spot."
  type        = bool
  default     = true
}

variable "warm_pool_max_prepared" {
  description = "Stopped instances kept (with their cache volumes) for reuse; each costs its EBS storage while idle (see README's cost table)."
  type        = number
  default     = 3
}

variable "cache_volume_throughput" {
  description = "Cache volume throughput in MiB/s; 125 is gp3's included baseline, more is billed."
  type        = number
  default     = 125
}

variable "visibility_timeout_seconds" {
  description = "The jobs queue's visibility timeout; janitord renews it while a job runs."
  type        = number
  default     = 120
}

variable "lifecycle_heartbeat_timeout_seconds" {
  description = "Terminating hook timeout; janitord sends a heartbeat every third of it while draining."
  type        = number
  default     = 300
}

variable "reports_retention_days" {
  description = "Days reports under janitor-reports/ are kept (0 keeps them forever)."
  type        = number
  default     = 365
}

variable "log_retention_days" {
  description = "Days job output is kept in /janitor-runner."
  type        = number
  default     = 30
}

variable "daily_budget_usd" {
  description = "AWS Budgets alert threshold on the janitor tag: the idle-cost target."
  type        = number
  default     = 2
}

variable "budget_email" {
  description = "Where budget alerts go; empty for none."
  type        = string
  default     = ""
}

variable "agent_ecr_repository" {
  description = "ECR repository of the agent image (`make image` pushes there)."
  type        = string
  default     = "janitor-agent"
}

variable "agent_bedrock_models" {
  description = "Bedrock model ids (or inference profile ids) the agent may invoke, such as `anthropic.claude-sonnet-4-5-20250929-v1:0`; empty for no Bedrock (the agent then uses an API key secret)."
  type        = list(string)
  default     = []
}

variable "alert_email" {
  description = "Where the alerts topic (dead letters, idle instances, budget) sends mail; empty for none (subscribe something else to the topic)."
  type        = string
  default     = ""
}

variable "idle_alarm_minutes" {
  description = "Minutes of instances in service with an empty queue before the idle alarm fires (the idle timeout is 5 minutes)."
  type        = number
  default     = 15
}

variable "github_repository" {
  description = "`owner/name` of the GitHub repository whose release workflow pushes the agent image through OIDC; empty for no release role."
  type        = string
  default     = ""
}

variable "status_target_url" {
  description = "The link of the commit statuses janitord posts for repositories with `report_status: true`: a URL with `{run_id}` and `{job_id}` replaced (where the run pages are served); empty for none."
  type        = string
  default     = ""

  validation {
    condition     = var.status_target_url == "" || startswith(var.status_target_url, "https://")
    error_message = "status_target_url must be empty or an https:// URL."
  }
}
