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
    # a scene of the whole lab (plots and 3D view) needs more pixels to be read
    this_size=$size
    if grep -q '^view = "window"' "$scene"; then this_size=${WINDOW_SIZE:-640x360}; fi
    .venv/bin/losslab record "$scene" -o "docs/gifs/$name.gif" --size "$this_size" --fps "$fps" \
        --frames $((seconds * fps))
done
ls -l docs/gifs
