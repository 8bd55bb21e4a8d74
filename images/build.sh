#!/usr/bin/env bash
# Builds farm's images from the repository on the local Docker daemon, making the local
# base first if it is missing (images/make-bases.sh): farm/farm and farm/executor-dind on
# $BASE (default farm/debian:bookworm), farm/executor-dood and farm/executor-sandbox on
# farm/farm (so farm is built first when it is asked for too, or missing), tagged $TAG
# (default dev). RUN steps reach the package registries through the host network (the
# daemon here has no bridge).
# Usage: images/build.sh [farm] [executor-dood] [executor-dind] [executor-sandbox]   (all when none is named)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${TAG:-dev}
base=${BASE:-farm/debian:bookworm}
[ $# -gt 0 ] || set -- farm executor-dood executor-dind executor-sandbox
on_farm=" executor-dood executor-sandbox "  # the images that start from farm/farm
# Those start from farm: build farm first (if asked for, or if it is missing).
needs_farm=
for name in "$@"; do [[ "$on_farm" == *" $name "* ]] && needs_farm=1; done
if [[ -n "$needs_farm" && " $* " != *" farm "* ]] && ! docker image inspect "farm/farm:$tag" >/dev/null 2>&1; then
  set -- farm "$@"
fi
ordered=()
for name in "$@"; do [ "$name" = farm ] && ordered+=(farm); done
for name in "$@"; do [ "$name" = farm ] || ordered+=("$name"); done
set -- "${ordered[@]}"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  [ "$base" = farm/debian:bookworm ] || { echo "base image $base is not on the daemon" >&2; exit 1; }
  images/make-bases.sh debian >/dev/null
fi
for name in "$@"; do
  [ -f "images/$name/Dockerfile" ] || { echo "no images/$name/Dockerfile" >&2; exit 2; }
  from=$base
  [[ "$on_farm" == *" $name "* ]] && from=farm/farm:$tag
  echo "building farm/$name:$tag from $from" >&2
  if ! out=$(docker build --network host --build-arg "BASE=$from" -f "images/$name/Dockerfile" -t "farm/$name:$tag" . 2>&1); then
    echo "$out" | tail -40 >&2
    exit 1
  fi
  echo "farm/$name:$tag"
done
