#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for sbkit's tests and runs them all:
# installs the oracle tools, fetches test assets, checks formatting and lints,
# then runs the unit, oracle and firmware (QEMU/OVMF) tests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cd "$top"

bash scripts/install-deps.sh
bash scripts/fetch-assets.sh

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked "$@"
