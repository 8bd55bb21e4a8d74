#!/usr/bin/env bash
# Builds farm's images from the repository on the local Docker daemon, making the local
# bases first if they are missing (images/make-bases.sh): farm/farm, farm/executor-dood and
# farm/executor-dind, tagged $TAG (default dev). RUN steps reach the package registries
# through the host network (the daemon here has no bridge).
# Usage: images/build.sh [farm] [executor-dood] [executor-dind]   (all three when none is named)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${TAG:-dev}
base=${BASE:-farm/debian:bookworm}
[ $# -gt 0 ] || set -- farm executor-dood executor-dind
if ! docker image inspect "$base" >/dev/null 2>&1; then
  [ "$base" = farm/debian:bookworm ] || { echo "base image $base is not on the daemon" >&2; exit 1; }
  images/make-bases.sh debian >/dev/null
fi
for name in "$@"; do
  [ -f "images/$name/Dockerfile" ] || { echo "no images/$name/Dockerfile" >&2; exit 2; }
  echo "building farm/$name:$tag from $base" >&2
  if ! out=$(docker build --network host --build-arg "BASE=$base" -f "images/$name/Dockerfile" -t "farm/$name:$tag" . 2>&1); then
    echo "$out" | tail -40 >&2
    exit 1
  fi
  echo "farm/$name:$tag"
done
