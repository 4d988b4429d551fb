terraform {
  required_version = ">= 1.6"

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
    tags = {
      janitor     = var.env
      Project     = "janitor-fleet"
      Environment = var.env
      ManagedBy   = "terraform"
    }
  }
}
