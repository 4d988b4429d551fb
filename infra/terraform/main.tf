data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  name       = "janitor-${var.env}"
  account_id = data.aws_caller_identity.current.account_id
  log_group  = "/janitor-runner"
}

# Each pool's settings with the variables' defaults filled in.
locals {
  pools = {
    for name, p in var.pools : name => {
      instance_type          = p.instance_type
      gpu_memory_gb          = p.gpu_memory_gb
      gpu                    = p.gpu_memory_gb > 0
      max_instances          = coalesce(p.max_instances, var.max_concurrent_instances)
      ami_id                 = coalesce(p.ami_id, var.ami_id)
      warm_pool_max_prepared = coalesce(p.warm_pool_max_prepared, var.warm_pool_max_prepared)
      cache_volume_gb        = coalesce(p.cache_volume_gb, var.cache_volume_gb)
      spot_instance_types    = distinct(concat([p.instance_type], coalesce(p.spot_instance_types, var.spot_instance_types)))
    }
  }
}

# Each pool's jobs queue and its dead-letter queue: a message received 3 times without being
# deleted (bad input, or three interruptions) moves there.
resource "aws_sqs_queue" "dead_letter" {
  for_each                  = local.pools
  name                      = "${local.name}-${each.key}-jobs-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
}

resource "aws_sqs_queue" "jobs" {
  for_each                   = local.pools
  name                       = "${local.name}-${each.key}-jobs"
  visibility_timeout_seconds = var.visibility_timeout_seconds
  receive_wait_time_seconds  = 20
  message_retention_seconds  = 345600
  sqs_managed_sse_enabled    = true
  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dead_letter[each.key].arn
    maxReceiveCount     = 3
  })
}

# The ledger: janitor-reports/ (runs, jobs, repos, instances) and janitor-cache/.
resource "aws_s3_bucket" "ledger" {
  #checkov:skip=CKV_AWS_144:Reports are reproducible by rerunning a validation; cross-region replication would double the cost for nothing.
  #checkov:skip=CKV_AWS_18:Access logging needs a second bucket; CloudTrail data events cover audits when wanted.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket notifications; janitorctl reads the ledger by listing.
  #checkov:skip=CKV_AWS_145:SSE-S3 (AES256) is enough for validation reports; a KMS key adds cost and key policy to manage.
  bucket = "${local.name}-ledger-${local.account_id}"
  # Versioned: only a bucket told so is destroyed with its reports (`make destroy` tells it).
  force_destroy = var.ledger_force_destroy
}

resource "aws_s3_bucket_versioning" "ledger" {
  bucket = aws_s3_bucket.ledger.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "ledger" {
  bucket = aws_s3_bucket.ledger.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "ledger" {
  bucket                  = aws_s3_bucket.ledger.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "ledger" {
  bucket = aws_s3_bucket.ledger.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "ledger" {
  bucket = aws_s3_bucket.ledger.id

  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  rule {
    id     = "reports"
    status = var.reports_retention_days > 0 ? "Enabled" : "Disabled"
    filter {
      prefix = "janitor-reports/"
    }
    expiration {
      days = var.reports_retention_days > 0 ? var.reports_retention_days : 36500
    }
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  rule {
    id     = "cache"
    status = "Enabled"
    filter {
      prefix = "janitor-cache/"
    }
    expiration {
      days = 30
    }
    noncurrent_version_expiration {
      noncurrent_days = 7
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }
}

resource "aws_cloudwatch_log_group" "runner" {
  #checkov:skip=CKV_AWS_338:Job output is kept `log_retention_days` (30 by default) to bound cost; the S3 reports are the lasting record.
  #checkov:skip=CKV_AWS_158:Job output is build and test logs; CloudWatch's default encryption at rest is enough, a KMS key adds cost.
  name              = local.log_group
  retention_in_days = var.log_retention_days
}
