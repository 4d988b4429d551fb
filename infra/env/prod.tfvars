env                      = "prod"
region                   = "us-east-1"
vpc_id                   = "vpc-REPLACE-ME"
subnet_ids               = ["subnet-REPLACE-ME-a", "subnet-REPLACE-ME-b"]
ami_id                   = "ami-REPLACE-ME" # from `make ami`
max_concurrent_instances = 10
reports_retention_days   = 365
log_retention_days       = 30
daily_budget_usd         = 2
budget_email             = ""

# The pools (infra/terraform/variables.tf has the defaults: cpu, gpu-24, gpu-48). A map here
# replaces them all, so keep the ones you use; janitorctl routes by gpu_memory_gb.
# pools = {
#   "cpu"    = { instance_type = "c7i.xlarge", gpu_memory_gb = 0, warm_pool_max_prepared = 1 }
#   "gpu-24" = { instance_type = "g5.xlarge", gpu_memory_gb = 24 }
#   "gpu-48" = { instance_type = "g6e.xlarge", gpu_memory_gb = 48, max_instances = 4, warm_pool_max_prepared = 1 }
#   "gpu-80" = { instance_type = "p4de.24xlarge", gpu_memory_gb = 80, max_instances = 1, warm_pool_max_prepared = 0 }
# }
