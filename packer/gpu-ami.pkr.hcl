# The golden GPU AMI: Ubuntu 24.04 LTS, the NVIDIA driver and container toolkit, Docker with its
# data root on the cache volume, the SSM agent, git, janitord and its systemd units.
# Build: `make ami` (it builds janitord for Linux first and passes the binary here).

packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = "~> 1.3"
    }
  }
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "env" {
  type    = string
  default = "dev"
}

variable "instance_type" {
  type        = string
  default     = "g5.xlarge"
  description = "A GPU instance, so the build can check that a container sees the GPU."
}

variable "janitord_binary" {
  type        = string
  default     = "target/release/janitord"
  description = "The Linux x86_64 janitord to install."
}

variable "nvidia_driver" {
  type = string
  # The 580 branch: CUDA 13 images (worker-vllm's) need a driver >= 580; the open kernel
  # modules are what newer GPUs (Hopper and later) need and NVIDIA recommends from Turing on.
  default = "nvidia-driver-580-server-open"
}

locals {
  stamp = formatdate("YYYYMMDD-hhmmss", timestamp())
}

source "amazon-ebs" "gpu" {
  region        = var.region
  instance_type = var.instance_type
  ami_name      = "janitor-gpu-${var.env}-${local.stamp}"
  ssh_username  = "ubuntu"

  # The temporary security group opens SSH to this machine's public address (/32) only, not
  # to 0.0.0.0/0, for the minutes the build runs.
  temporary_security_group_source_public_ip = true

  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["099720109477"] # Canonical
    most_recent = true
  }

  # IMDSv2 on the build instance and on every instance launched from the AMI.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
  imds_support = "v2.0"

  launch_block_device_mappings {
    device_name           = "/dev/sda1"
    volume_size           = 60
    volume_type           = "gp3"
    encrypted             = true
    delete_on_termination = true
  }

  encrypt_boot = true

  tags = {
    Name    = "janitor-gpu-${var.env}"
    janitor = var.env
    Source  = "{{ .SourceAMIName }}"
  }
  run_tags = {
    janitor = var.env
  }
}

build {
  sources = ["source.amazon-ebs.gpu"]

  provisioner "file" {
    source      = var.janitord_binary
    destination = "/tmp/janitord"
  }

  provisioner "file" {
    source      = "systemd"
    destination = "/tmp/janitor-systemd"
  }

  provisioner "shell" {
    execute_command = "sudo -E bash '{{ .Path }}'"
    environment_vars = [
      "NVIDIA_DRIVER=${var.nvidia_driver}",
    ]
    scripts = ["packer/scripts/install.sh"]
  }

  # The driver needs a reboot before the GPU check.
  provisioner "shell" {
    inline            = ["sudo reboot"]
    expect_disconnect = true
  }

  provisioner "shell" {
    pause_before    = "30s"
    execute_command = "sudo -E bash '{{ .Path }}'"
    scripts         = ["packer/scripts/check-gpu.sh"]
  }
}
