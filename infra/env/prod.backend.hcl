# Partial S3 backend for ENV=prod: `terraform init -backend-config=infra/env/prod.backend.hcl`.
bucket       = "REPLACE-ME-terraform-state"
key          = "janitor-fleet/prod.tfstate"
region       = "us-east-1"
encrypt      = true
use_lockfile = true
