"""``python -m visualizer``: the same as the ``losslab`` command."""

from visualizer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
