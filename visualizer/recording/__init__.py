"""Recording: camera keyframes and timelines (Qt-free math here; the recorder itself comes with issue 5)."""
