#!/usr/bin/env bash
# Builds the sbkit images described in docker-bake.hcl with the Docker engine's
# classic builder, for engines without buildx (`docker buildx bake` reads the same file).
#
#   cargo build --release --locked
#   bash scripts/base-image.sh            # the offline base, sbkit-base:bookworm
#   bash scripts/build-images.sh          # every target of the "default" group
#   bash scripts/build-images.sh genkey   # some targets or groups
#   bash scripts/build-images.sh --print  # the resolved targets as JSON, nothing built
#
# docker-bake.hcl is the single source of truth: targets (context, dockerfile, args,
# tags, labels), groups and variables. Variables work as in bake: an environment variable
# of the same name overrides the default, and "${NAME}" in strings is replaced. The file
# is read by `sbkit images build --print` (the hcl crate), so this script needs the
# sbkit binary; it also writes the man pages and completions the images install
# (`sbkit generate` into target/release/share, or $SBKIT_BIN_DIR/share).
# - BASE: when not set, sbkit-base:bookworm (scripts/base-image.sh) if the engine has it,
#   else the file's default, debian:bookworm-slim.
# - TAG: the image tag (default latest).
# - VERSION: the org.opencontainers.image.version label; when not set, the package
#   version in Cargo.toml (`sbkit doctor` shows it).
#
# The build context sent to the engine holds only the dockerfile and what its COPY/ADD
# lines name (the classic builder would otherwise send the whole context, target/
# included). RUN steps get no network (--network none): everything comes from the base
# image. Other settings:
#   SBKIT_BIN_DIR        take the binaries that the containerfiles copy from target/release/
#                        from this directory instead (the tests use their own build)
#   SBKIT_BUILD_NETWORK  network of RUN steps (default none; "default" to let a
#                        debian:bookworm-slim base install its packages)
#   SBKIT_BAKE_FILE      the bake file (default docker-bake.hcl)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cd "$top"
bake=${SBKIT_BAKE_FILE:-docker-bake.hcl}
bins=${SBKIT_BIN_DIR:-target/release}
sbkit=$bins/sbkit
network=${SBKIT_BUILD_NETWORK:-none}
offline_base=${SBKIT_BASE_IMAGE:-sbkit-base:bookworm}

say() { echo "build-images: $*" >&2; }
die() { say "$*"; exit 1; }

print=0
names=()
for a in "$@"; do
  case "$a" in
    --print) print=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $a" ;;
    *) names+=("$a") ;;
  esac
done
[ ${#names[@]} -gt 0 ] || names=(default)

command -v jq >/dev/null || die "jq is missing: run scripts/install-deps.sh (or apt-get install jq)"
[ -f "$bake" ] || die "no bake file $bake"

if [ -z "${BASE+set}" ] && docker image inspect "$offline_base" >/dev/null 2>&1; then
  export BASE=$offline_base
fi

if [ -z "${VERSION+set}" ]; then
  VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)
  [ -z "$VERSION" ] || export VERSION
fi

[ -x "$sbkit" ] || die "$sbkit is missing: run cargo build --release --locked first"

# The requested targets, variables substituted, as one JSON object per line.
resolve() {
  "$sbkit" images build --print --bake "$bake" "${names[@]}" |
    jq -c '.target | to_entries[] | {name: .key} + .value'
}
targets=$(resolve) || die "cannot read $bake"

if [ "$print" = 1 ]; then
  printf '%s\n' "$targets" | jq -s 'map({key: .name, value: del(.name)}) | from_entries | {target: .}'
  exit 0
fi

# Man pages and completions, from the same grammar the binaries parse with.
"$sbkit" generate "$bins/share" >/dev/null 2>&1 || die "$sbkit generate $bins/share failed"

# Sources of the COPY/ADD lines of a dockerfile that read the build context (not --from).
copy_sources() {
  awk '
    { line = $0 }
    cont != "" { line = cont " " line; cont = "" }
    /\\[ \t]*$/ { sub(/\\[ \t]*$/, "", line); cont = line; next }
    { print line }
  ' "$1" | awk '
    toupper($1) == "COPY" || toupper($1) == "ADD" {
      if ($2 ~ /^\[/) { print "JSON " $0; next }
      n = 0; from = 0
      for (i = 2; i <= NF; i++) {
        if ($i ~ /^--/) { if ($i ~ /^--from=/) from = 1; continue }
        args[++n] = $i
      }
      if (!from) for (i = 1; i < n; i++) print args[i]
    }'
}

command -v docker >/dev/null || die "docker is not installed"
say "base image: $(jq -r '.args.BASE // "?"' <<<"$(head -n1 <<<"$targets")"); RUN network: $network"
export DOCKER_BUILDKIT=0
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
summary=()
while IFS= read -r t; do
  name=$(jq -r .name <<<"$t")
  context=$(jq -r .context <<<"$t")
  dockerfile=$(jq -r .dockerfile <<<"$t")
  [ -f "$context/$dockerfile" ] || die "$name: no dockerfile $context/$dockerfile"
  ctx=$stage/$name
  mkdir -p "$ctx"
  (cd "$context" && cp -a --parents "$dockerfile" "$ctx/")
  while IFS= read -r src; do
    case "$src" in
      JSON*) die "$name: COPY/ADD in JSON form is not supported here: ${src#JSON }" ;;
    esac
    rel=${src#./}
    if [ -n "${SBKIT_BIN_DIR:-}" ] && [[ "$rel" == target/release/* ]]; then
      from=$SBKIT_BIN_DIR/${rel#target/release/}
      [ -e "$from" ] || die "$name: $from is missing (SBKIT_BIN_DIR)"
      mkdir -p "$ctx/$(dirname "$rel")"
      cp -a "$from" "$ctx/$rel"
      continue
    fi
    matched=0
    while IFS= read -r f; do
      [ -n "$f" ] || continue
      (cd "$context" && cp -a --parents "$f" "$ctx/")
      matched=1
    done < <(cd "$context" && { compgen -G "$rel" || true; })
    if [ "$matched" = 0 ]; then
      case "$rel" in
        target/release/*) die "$name: $context/$rel is missing: run cargo build --release --locked first" ;;
        *) die "$name: $context/$rel (COPY in $dockerfile) is missing" ;;
      esac
    fi
  done < <(copy_sources "$context/$dockerfile")

  build=(docker build --network "$network" --force-rm -f "$dockerfile")
  while IFS= read -r kv; do build+=(--build-arg "$kv"); done < <(jq -r '.args | to_entries[] | "\(.key)=\(.value)"' <<<"$t")
  while IFS= read -r kv; do build+=(--label "$kv"); done < <(jq -r '.labels | to_entries[] | "\(.key)=\(.value)"' <<<"$t")
  while IFS= read -r tag; do build+=(-t "$tag"); done < <(jq -r '.tags[]' <<<"$t")
  first_tag=$(jq -r '.tags[0] // empty' <<<"$t")
  [ -n "$first_tag" ] || die "$name: no tags"
  say "$name: ${build[*]} - ($(du -sm "$ctx" | cut -f1) MiB context)"
  old_id=$(docker image inspect -f '{{.Id}}' "$first_tag" 2>/dev/null || true)
  t0=$SECONDS
  if ! tar -C "$ctx" -c . | "${build[@]}" - >"$stage/$name.log" 2>&1; then
    cat "$stage/$name.log" >&2
    die "$name: docker build failed"
  fi
  sed "s/\x1b\[[0-9;]*m//g" "$stage/$name.log" | grep -E "^(Step |runtime-rootfs:)" | sed "s/^/  /" >&2 || true
  # The image this build replaced, when nothing else uses it (rmi refuses otherwise).
  if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$first_tag")" ] &&
     [ -z "$(docker image inspect -f '{{join .RepoTags ""}}' "$old_id" 2>/dev/null)" ]; then
    docker rmi "$old_id" >/dev/null 2>&1 || true
  fi
  size=$(docker image inspect -f '{{.Size}}' "$first_tag" | awk '{printf "%.0f MB", $1/1000000}')
  summary+=("$(printf '%-12s %-28s %8s %5d s' "$name" "$first_tag" "$size" $((SECONDS - t0)))")
done <<<"$targets"

say "built:"
printf '  %s\n' "${summary[@]}" >&2
