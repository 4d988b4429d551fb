# Partial S3 backend for ENV=dev: `terraform init -backend-config=infra/env/dev.backend.hcl`.
bucket       = "REPLACE-ME-terraform-state"
key          = "janitor-fleet/dev.tfstate"
region       = "us-east-1"
encrypt      = true
use_lockfile = true
