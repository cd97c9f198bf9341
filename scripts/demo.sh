#!/usr/bin/env bash
# The main job on a built-in default: sets up what sbkit needs, builds it, and
# makes a Secure Boot key hierarchy for the demo organisation in demo/keys.
# (Later issues extend this to the whole chain: signed UKI/ISO and a test boot.)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cd "$top"

bash scripts/install-deps.sh
cargo build --release --locked
out=${SBKIT_DEMO_DIR:-$top/demo}
mkdir -p "$out"
if [ -f "$out/keys/manifest.json" ]; then
  echo "demo: reusing the keys in $out/keys (remake certificates and lists)"
  ./target/release/genkey "sbkit demo" -o "$out/keys" --reuse-keys
else
  ./target/release/genkey "sbkit demo" -o "$out/keys"
fi
