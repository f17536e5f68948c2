#!/bin/sh
# The README's GIFs: each demo scene in assets/scenes rendered headless (xvfb-run when there is no display).
# Usage: scripts/make_gifs.sh [SIZE] [FPS]     (defaults 480x270, 10)
set -e
cd "$(dirname "$0")/.."
size=${1:-480x270}
fps=${2:-10}
mkdir -p docs/gifs
for scene in assets/scenes/*.toml; do
    name=$(basename "$scene" .toml)
    echo "== $name"
    .venv/bin/losslab record "$scene" -o "docs/gifs/$name.gif" --size "$size" --fps "$fps"
done
ls -l docs/gifs
