# The image build graph of sbkit: one source of truth for `docker buildx bake`
# (which reads HCL natively), `sbkit images build` (which reads this file with the
# hcl crate and builds through the engine API when buildx is missing) and
# scripts/build-images.sh (which asks `sbkit images build --print` for the targets).
#
# Variables are overridden by environment variables of the same name, as in bake:
# BASE (the base image; sbkit-base:bookworm from scripts/base-image.sh when the engine
# has it), TAG (the image tag) and VERSION (the org.opencontainers.image.version label).

variable "BASE" {
  default = "debian:bookworm-slim"
}

variable "TAG" {
  default = "latest"
}

variable "VERSION" {
  default = "dev"
}

group "default" {
  targets = ["genkey", "build-uki", "enroll", "sbkit-qemu"]
}

target "genkey" {
  context    = "."
  dockerfile = "containerfiles/genkey"
  args = {
    BASE = "${BASE}"
  }
  tags = ["genkey:${TAG}"]
  labels = {
    "org.opencontainers.image.title" = "genkey"
    "org.opencontainers.image.version" = "${VERSION}"
  }
}

target "build-uki" {
  context    = "."
  dockerfile = "containerfiles/build-uki"
  args = {
    BASE = "${BASE}"
  }
  tags = ["build-uki:${TAG}"]
  labels = {
    "org.opencontainers.image.title" = "build-uki"
    "org.opencontainers.image.version" = "${VERSION}"
  }
}

target "enroll" {
  context    = "."
  dockerfile = "containerfiles/enroll"
  args = {
    BASE = "${BASE}"
  }
  tags = ["enroll:${TAG}"]
  labels = {
    "org.opencontainers.image.title" = "enroll"
    "org.opencontainers.image.version" = "${VERSION}"
  }
}

target "sbkit-qemu" {
  context    = "."
  dockerfile = "containerfiles/sbkit-qemu"
  args = {
    BASE = "${BASE}"
  }
  tags = ["sbkit-qemu:${TAG}"]
  labels = {
    "org.opencontainers.image.title" = "sbkit-qemu"
    "org.opencontainers.image.version" = "${VERSION}"
  }
}
