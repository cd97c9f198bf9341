#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for sbkit's tests and runs them all:
# installs the oracle tools, fetches test assets, checks formatting and lints,
# builds the release binaries and the suite's images (offline, from the
# debootstrap base, through `sbkit images build`), then runs the unit, oracle,
# container and firmware (QEMU/OVMF) tests, after a short fuzz smoke.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cd "$top"

bash scripts/install-deps.sh
bash scripts/fetch-assets.sh

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

# The launcher's tests run the tools in their :latest images.
cargo build --release --locked
bash scripts/base-image.sh
./target/release/sbkit images build

# Fuzz smoke: every parser of untrusted bytes for a few seconds; any crash fails.
bash scripts/fuzz.sh "${SBKIT_FUZZ_SECONDS:-5}"

cargo test --locked "$@"
