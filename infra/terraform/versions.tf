terraform {
  required_version = ">= 1.11" # use_lockfile in the S3 backend

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.70"
    }
  }

  # Partial configuration: `make infra-plan ENV=dev` passes infra/env/dev.backend.hcl.
  backend "s3" {}
}

provider "aws" {
  region = var.region

  # The `janitor` cost-allocation tag (activate it once in the Billing console) on everything.
  default_tags {
    tags = local.tags
  }
}

locals {
  # On every resource; default_tags do not reach what the group launches, so the launch
  # template's tag specifications carry the same (instances and their volumes).
  tags = {
    janitor     = var.env
    Project     = "janitor-fleet"
    Environment = var.env
    ManagedBy   = "terraform"
  }
}
