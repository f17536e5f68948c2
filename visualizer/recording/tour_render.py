"""A whole tour rendered headless to one MP4: ``losslab record TOUR.toml -o course.mp4 [--chapters 2-4]``.

Each chapter is rendered on its own, deterministically, as a scene is (``recorder.render``: the simulation
clock, synchronous runs) or as a title card (``tour.card_image``), all at the tour's size and rate, into a segment
file in a work folder beside the output (``course.tour-parts``). A finished segment is recorded in the
folder's manifest with a key of everything that makes its frames (the chapter, the size, the rate); a render
that was interrupted resumes after the last finished chapter, and a chapter whose key changed is rendered again.
When all are there, the segments are joined without re-encoding, with MP4 chapter markers (an FFMETADATA file:
titles and start times) so that video players show a chapter list, and a WebVTT file of the captions is
written beside the video (``course.vtt``). The work folder is removed once the video is complete.

The title plate of every chapter shows its caption (what the picture proves, and the paper). Progress is shown
per chapter and for the whole tour.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys

from visualizer.recording.recorder import PROG, RenderError, Stopped, UsageError, signal_name

MANIFEST = "manifest.json"


class TourStopped(Stopped):
    """A tour render stopped by a signal: the finished chapters are kept for a resume."""

    def __init__(self, signum: int, chapter: int, work: str) -> None:
        super().__init__(signum)
        self.chapter, self.work = chapter, work
        kept = f"the chapters before it are kept in {work}" if chapter > 1 else "no chapter was finished"
        self.args = (f"stopped by {signal_name(signum)} in chapter {chapter}; {kept} (the same command resumes "
                     "from there); no video written",)


# ---------------------------------------------------------------------------------------------------------
# markers: FFMETADATA chapters and WebVTT captions
# ---------------------------------------------------------------------------------------------------------

def _meta_escape(text: str) -> str:
    """A value in an FFMETADATA file: '=', ';', '#', '\\' and newlines escaped with a backslash."""
    return "".join("\\" + c if c in "=;#\\\n" else c for c in text)


def ffmetadata(title: str, spans: list[tuple[str, int, int]], fps: int) -> str:
    """An FFMETADATA file: the tour's title and one [CHAPTER] per (title, first frame, end frame)."""
    out = [";FFMETADATA1", f"title={_meta_escape(title)}" if title else ""]
    for name, start, end in spans:
        out += ["", "[CHAPTER]", f"TIMEBASE=1/{fps}", f"START={start}", f"END={end}", f"title={_meta_escape(name)}"]
    return "\n".join(out) + "\n"


def vtt_time(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def caption_cues(tour, chosen: list[int]) -> list[tuple[float, float, str, bool]]:
    """The captions of the chosen chapters on the video's clock: (start, end, text, is the chapter's caption).
    A chapter's caption spans the chapter (at the top, as burned in); its scene's captions keep their times."""
    cues = []
    t0 = 0.0
    for i in chosen:
        ch = tour.chapters[i]
        length = ch.frames(tour.fps) / tour.fps
        if ch.caption:
            cues.append((t0, t0 + length, ch.caption, True))
        if ch.scene is not None:
            cues += [(t0 + c.start, t0 + min(c.end, length), c.text, False) for c in ch.scene.captions
                     if c.start < length]
        t0 += length
    return sorted(cues, key=lambda c: (c[0], not c[3]))


def webvtt(cues) -> str:
    out = ["WEBVTT", ""]
    for k, (start, end, text, top) in enumerate(cues, 1):
        text = " ".join(text.split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        out += [str(k), f"{vtt_time(start)} --> {vtt_time(end)}" + (" line:0" if top else ""), text, ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------------------

def work_folder(out: str) -> str:
    """The folder beside ``out`` where finished chapters wait (``course.mp4`` -> ``course.tour-parts``)."""
    return os.path.splitext(os.path.abspath(out))[0] + ".tour-parts"


def vtt_path(out: str) -> str:
    return os.path.splitext(out)[0] + ".vtt"


def chapter_key(ch, size: tuple[int, int], fps: int, frames: int | None) -> str:
    """What makes a chapter's frames: a finished segment with another key is rendered again."""
    from visualizer.recording.scene import dump_scene

    what = dump_scene(ch.scene) if ch.scene is not None else json.dumps(dataclasses.asdict(ch.card))
    blob = json.dumps([what, ch.title, ch.caption, ch.card_seconds, list(size), fps, frames])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _read_manifest(work: str) -> dict:
    try:
        with open(os.path.join(work, MANIFEST), "rb") as fh:
            raw = fh.read(1 << 20)
        done = json.loads(raw.decode("utf-8")).get("done", {})
        return {str(k): v for k, v in done.items() if isinstance(v, dict)}
    except (OSError, ValueError, AttributeError):
        return {}  # none yet, or unreadable: every chapter is rendered


def _write_manifest(work: str, done: dict) -> None:
    from models.export import atomic_write

    atomic_write(os.path.join(work, MANIFEST), json.dumps({"done": done}, indent=1).encode("utf-8"))


def _render_card(ch, seg: str, width: int, height: int, fps: int, n: int, footer: str, on_frame, stop) -> None:
    from visualizer.recording.frames import Encoder, image_to_frame
    from visualizer.recording.tour import card_image

    frame = image_to_frame(card_image(ch.card, width, height, footer))
    enc = Encoder(seg, width, height, fps)
    enc.start()
    try:
        for i in range(n):
            sig = stop() if stop is not None else None
            if sig:
                raise Stopped(int(sig), i, n)
            enc.put_wait(frame)
            on_frame(i, frame)
        enc.finish(wait=True)
    except BaseException:
        enc.abort()
        raise
    if enc.error:
        raise RenderError(f"the video encoder (FFmpeg) failed: {enc.error.splitlines()[0]}")


def _join(segments: list[str], meta: str, tmp: str, work: str) -> None:
    """The segments joined without re-encoding into ``tmp``, with the chapters of the FFMETADATA file."""
    import subprocess

    import imageio_ffmpeg

    listing = os.path.join(work, "segments.txt")
    with open(listing, "w", encoding="utf-8") as fh:
        fh.writelines(f"file '{os.path.basename(s)}'\n" for s in segments)  # (our own names: no quoting needed)
    meta_path = os.path.join(work, "chapters.ffmeta")
    with open(meta_path, "w", encoding="utf-8") as fh:
        fh.write(meta)
    r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-v", "error", "-f", "concat", "-safe", "0",
                        "-i", listing, "-i", meta_path, "-map", "0:v", "-map_metadata", "1", "-map_chapters", "1",
                        "-c", "copy", "-movflags", "+faststart", "-f", "mp4", tmp],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        raise RenderError(f"FFmpeg could not join the chapters: {lines[-1] if lines else r.returncode}")


def render_tour(tour, out: str, chapters: list[int] | None = None, size: tuple[int, int] | None = None,
                fps: int | None = None, frames: int | None = None, progress: bool = True, stop=None,
                tmp: str | None = None, config_dir: str | None = None, on_chapter=None) -> dict:
    """Render the ``chapters`` (0-based indices; default all) of ``tour`` to the MP4 ``out`` with chapter
    markers, and the captions to ``out``'s .vtt. ``frames``: only the first that many of each chapter (a quick
    look). ``stop()`` is asked at every frame: a signal number stops with TourStopped, the finished chapters
    kept for a resume. ``on_chapter(k, index, resumed)`` is told as each chapter begins. Returns
    ``{"frames": n, "chapters": [(title, start s, end s)], "resumed": [indices kept from before]}``."""
    from PySide6.QtWidgets import QApplication

    from models.export import atomic_write
    from visualizer.qtsetup import prepare_qt
    from visualizer.recording.frames import check_output, check_size, partial_path, publish
    from visualizer.recording.recorder import render

    check_output(out)
    prepare_qt()
    app = QApplication.instance() or QApplication([])  # (held to the end: the cards are painted with Qt)
    if not out.lower().endswith(".mp4"):
        raise OSError(f"cannot write {out}: a tour renders to .mp4 (GIF has no chapters)")
    tour = dataclasses.replace(tour, size=size or tour.size, fps=fps or tour.fps)
    width, height = tour.size
    check_size(width, height)
    chosen = list(range(len(tour.chapters))) if chapters is None else list(chapters)
    if frames is not None:  # the first frames of every chapter: their durations shrink to that
        tour = dataclasses.replace(tour, chapters=[_shortened(ch, frames, tour.fps) for ch in tour.chapters])
    counts = {i: tour.chapters[i].frames(tour.fps) for i in chosen}
    total = sum(counts.values())
    work = work_folder(out)
    os.makedirs(work, exist_ok=True)
    done = _read_manifest(work)
    tty = sys.stderr.isatty()
    cr, nl = ("\r", "") if tty else ("", "\n")
    state = {"before": 0}
    resumed, segments, spans = [], [], []
    for k, i in enumerate(chosen, 1):
        ch = tour.chapters[i]
        n = counts[i]
        seg = os.path.join(work, f"chapter-{i + 1:03d}.mp4")
        key = chapter_key(ch, tour.size, tour.fps, frames)
        kept = done.get(str(i), {}).get("key") == key and os.path.isfile(seg)
        if on_chapter is not None:
            on_chapter(k, i, kept)
        head = f"chapter {k}/{len(chosen)} {ch.title!r}"
        if kept:
            resumed.append(i)
            if progress:
                sys.stderr.write(f"{head}: finished before, kept{nl or chr(10)}")
        else:
            def on_frame(f: int, _frame, head=head, n=n) -> None:
                if progress and (tty or f == 0 or f + 1 == n or (f + 1) % max(1, n // 10) == 0):
                    at = state["before"] + f + 1
                    sys.stderr.write(f"{cr}{head}: frame {f + 1}/{n} · tour frame {at}/{total} "
                                     f"({at / total:4.0%}){nl}")
                    sys.stderr.flush()

            try:
                if ch.scene is not None:
                    scene = dataclasses.replace(ch.scene, title=ch.caption or ch.scene.title)
                    cfg = os.path.join(config_dir, f"chapter-{i + 1}") if config_dir else None
                    render(scene, seg, tour.size, tour.fps, progress=False, on_frame=on_frame, stop=stop,
                           config_dir=cfg)
                else:
                    _render_card(ch, seg, width, height, tour.fps, n, tour.title, on_frame, stop)
            except Stopped as exc:
                raise TourStopped(exc.signum, k, work) from None
            if tty and progress:
                sys.stderr.write("\n")
            done[str(i)] = {"key": key, "frames": n}
            _write_manifest(work, done)
        segments.append(seg)
        spans.append((ch.title, state["before"], state["before"] + n))
        state["before"] += n
    own_tmp = tmp or partial_path(out)
    try:
        _join(segments, ffmetadata(tour.title, spans, tour.fps), own_tmp, work)
        atomic_write(vtt_path(out), webvtt(caption_cues(tour, chosen)).encode("utf-8"))
        publish(own_tmp, out)
    finally:
        if os.path.exists(own_tmp):
            os.unlink(own_tmp)
    shutil.rmtree(work, ignore_errors=True)
    app.processEvents()
    return {"frames": total, "resumed": resumed,
            "chapters": [(t, a / tour.fps, b / tour.fps) for t, a, b in spans]}


def _shortened(ch, frames: int, fps: int):
    """``ch`` cut to its first ``frames`` frames (``--frames``)."""
    seconds = min(ch.duration, frames / fps)
    if ch.scene is not None:
        return dataclasses.replace(ch, scene=dataclasses.replace(ch.scene, duration=seconds),
                                   pauses=[t for t in ch.pauses if t < seconds])
    return dataclasses.replace(ch, card_seconds=seconds)


# ---------------------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str]):
    """``losslab record``'s arguments (``recorder.parse_args``) and ``--chapters``."""
    import argparse

    from visualizer.recording.recorder import parse_args as record_args

    p = argparse.ArgumentParser(prog=PROG, add_help=False)
    p.add_argument("--chapters", help="the chapters to render, 1-based: 2-4, 3 or 1,3-5 (default: all)")
    known, rest = p.parse_known_args(argv)
    args = record_args(rest)
    args.chapters = known.chapters
    if not args.out.lower().endswith(".mp4"):
        raise UsageError(f"-o {args.out}: a tour renders to .mp4 (GIF has no chapters)")
    return args


def cli(argv: list[str]) -> int:
    """``losslab record TOUR.toml -o OUT.mp4 [--chapters 2-4] [--size WxH] [--fps N] [--frames N]``: the
    supervisor (an X server of its own when there is no display, as for scenes), or the renderer it starts."""
    from visualizer.recording.recorder import CHILD_ENV, supervise

    if os.environ.get(CHILD_ENV) == "1":
        return main(argv)
    return supervise(argv, parse=parse_args, command=[sys.executable, "-m", "visualizer.recording.tour_render"])


def main(argv: list[str]) -> int:
    """The renderer (the display is the caller's). SIGTERM, SIGINT and SIGHUP stop it at the next frame; the
    chapters finished by then are kept and the same command resumes after them."""
    from visualizer.recording.recorder import renderer_main
    from visualizer.recording.tour import load_tour, parse_chapters

    def load(args, labs):
        tour = load_tour(args.scene, labs)
        return tour, parse_chapters(args.chapters, len(tour.chapters)) if args.chapters else None

    def draw(loaded, args, stop, tmp, cfg) -> str:
        tour, chosen = loaded
        result = render_tour(tour, args.out, chosen, args.size_wh, args.fps, args.frames, stop=stop, tmp=tmp,
                             config_dir=cfg)
        return (f"wrote {result['frames']} frames in {len(result['chapters'])} chapters to {args.out} "
                f"(captions: {vtt_path(args.out)})")

    return renderer_main(argv, parse_args, load, draw)


if __name__ == "__main__":  # the renderer started by ``cli``'s supervisor
    code = cli(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip Qt's teardown of GL windows at exit (see app.run_app)
