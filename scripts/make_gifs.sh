#!/bin/sh
# The README's GIFs: each demo scene in assets/scenes rendered headless (xvfb-run when there is no display).
# Usage: scripts/make_gifs.sh [SIZE] [FPS] [SECONDS]     (defaults 384x216, 8 fps, the first 10 s)
# (small on purpose: every frame of an orbiting camera changes, so a GIF costs ~25 kB a frame)
set -e
cd "$(dirname "$0")/.."
size=${1:-384x216}
fps=${2:-8}
seconds=${3:-10}
mkdir -p docs/gifs
for scene in assets/scenes/*.toml; do
    name=$(basename "$scene" .toml)
    echo "== $name"
    .venv/bin/losslab record "$scene" -o "docs/gifs/$name.gif" --size "$size" --fps "$fps" \
        --frames $((seconds * fps))
done
ls -l docs/gifs
