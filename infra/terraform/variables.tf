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

variable "pools" {
  description = <<-EOT
    The pools: one queue (with its dead-letter queue), launch template, Auto Scaling group and
    warm pool each. janitorctl sends each repository to the smallest pool that fits it (its
    `pool:` or `instance_type:`, else no GPU for `gpu_required: false` or hub.json's
    `runsOn: CPU`, else the GPU memory its tests' GPU ids need). `gpu_memory_gb` is one GPU's
    memory (0: no GPU); `max_instances` defaults to max_concurrent_instances; `ami_id`
    defaults to the golden AMI (which also serves CPU pools: its driver stays idle without a
    GPU); `warm_pool_max_prepared` and `cache_volume_gb` default to the variables of those names.
  EOT
  type = map(object({
    instance_type          = string
    gpu_memory_gb          = number
    max_instances          = optional(number)
    ami_id                 = optional(string)
    warm_pool_max_prepared = optional(number)
    cache_volume_gb        = optional(number)
    spot_instance_types    = optional(list(string))
  }))
  # Stopped instances kept: 1 + 3 + 1 (550 GB of gp3 when all are there, $1.47 a day: the
  # README's idle cost), most where most jobs run.
  default = {
    "cpu"    = { instance_type = "c7i.xlarge", gpu_memory_gb = 0, warm_pool_max_prepared = 1 }
    "gpu-24" = { instance_type = "g5.xlarge", gpu_memory_gb = 24 }
    "gpu-48" = { instance_type = "g6e.xlarge", gpu_memory_gb = 48, max_instances = 4, warm_pool_max_prepared = 1 }
  }

  validation {
    condition     = length(var.pools) >= 1 && alltrue([for k, _ in var.pools : can(regex("^[a-z][a-z0-9-]{0,19}$", k))])
    error_message = "pools: at least one, each named with 1 to 20 lowercase letters, digits or `-`, starting with a letter (such as gpu-48)."
  }
  validation {
    condition     = alltrue([for _, p in var.pools : p.gpu_memory_gb >= 0 && floor(p.gpu_memory_gb) == p.gpu_memory_gb])
    error_message = "pools: gpu_memory_gb is a whole number of GB per GPU, 0 for no GPU."
  }
  validation {
    condition     = alltrue([for _, p in var.pools : p.max_instances == null ? true : (p.max_instances >= 1 && p.max_instances <= 100)])
    error_message = "pools: max_instances 1 to 100."
  }
}

variable "max_concurrent_instances" {
  description = "Each pool's maximum size unless the pool sets max_instances: the most instances of one pool billing at once."
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
  description = "Instance types the spot policy may use, in order of preference, for a pool that gives none (the pool's own type is always first)."
  type        = list(string)
  default     = []
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

variable "ledger_force_destroy" {
  description = "Let `terraform destroy` delete the ledger bucket with every report in it, all versions. `make destroy` turns it on just before destroying; leave it false otherwise, so that no other change can lose the ledger."
  type        = bool
  default     = false
}
