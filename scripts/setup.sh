#!/usr/bin/env bash
# Creates .venv inside the repository and installs losslab with pinned versions.
# Usage: scripts/setup.sh [app|test]
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-app}"
PY="${PYTHON:-python3}"

need_apt=()
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1"; }
# Libraries Qt's xcb platform and Mesa's GL need, on Debian.
declare -A LIBS=(
  [libGL.so.1]=libgl1 [libGLX_mesa.so.0]=libglx-mesa0 [libEGL.so.1]=libegl1
  [libxkbcommon-x11.so.0]=libxkbcommon-x11-0 [libxcb-cursor.so.0]=libxcb-cursor0
  [libxcb-icccm.so.4]=libxcb-icccm4 [libxcb-keysyms.so.1]=libxcb-keysyms1
  [libxcb-shape.so.0]=libxcb-shape0 [libxcb-xinerama.so.0]=libxcb-xinerama0
  [libxcb-randr.so.0]=libxcb-randr0 [libxcb-render-util.so.0]=libxcb-render-util0
  [libxcb-image.so.0]=libxcb-image0 [libfontconfig.so.1]=libfontconfig1
  [libdbus-1.so.3]=libdbus-1-3
)
for lib in "${!LIBS[@]}"; do have_lib "$lib" || need_apt+=("${LIBS[$lib]}"); done
ls /usr/lib/x86_64-linux-gnu/dri/swrast_dri.so /usr/lib/*/dri/*swrast* >/dev/null 2>&1 || need_apt+=(libgl1-mesa-dri)
if [ "$MODE" = test ]; then
  command -v Xvfb >/dev/null || need_apt+=(xvfb)
  command -v xauth >/dev/null || need_apt+=(xauth)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages first: ${need_apt[*]}" >&2
    [ "$MODE" = test ] && exit 1
  fi
fi

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=.venv/.losslab-installed-$MODE
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  LOG=.venv/setup.log
  echo "setup: installing losslab and its pinned dependencies into .venv (log: $LOG)"
  pip_install() {
    if ! .venv/bin/python -m pip install "$@" >>"$LOG" 2>&1; then
      tail -n 40 "$LOG" >&2
      echo "setup: pip install $* failed (full log: $LOG)" >&2
      exit 1
    fi
  }
  .venv/bin/python -m pip install -q --upgrade pip >>"$LOG" 2>&1 || true
  # torch first and alone, pinned, so nothing pulls a multi-gigabyte CUDA build
  pip_install "torch==2.13.0"
  if [ "$MODE" = test ]; then
    pip_install -e ".[test,bench,distributed]"
  else
    pip_install -e .
  fi
  touch "$STAMP"
fi
