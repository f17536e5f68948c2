"""Tour files: parsed with tomllib, checked field by field; an error names the file, the line and the field, and a
chapter naming a missing scene file names it."""

import pytest

from visualizer.recording.scene import SceneError
from visualizer.recording.tour import TourError, is_tour, load_tour, parse_chapters

LABS = {"manifold2d": None, "surface": None}
FIELDS = {"manifold2d": {"model", "lr", "xs", "ys", "steps"}}

SCENE = """
lab = "manifold2d"
fps = 10
duration = 3.0
[settings]
model = "linear"
"""

GOOD = """title = "A test tour"
size = [640, 360]
fps = 12

[[chapter]]
title = "Opening"
duration = 2.5
card = { heading = "Why networks train", text = "p > n", formula = '\\frac{1}{2}\\|\\nabla L\\|^2 \\geq \\mu L' }

[[chapter]]
title = "From a file"
scene = "scenes/two.toml"
caption = "Descent lands on the nearest solution (Liu, Zhu, Belkin 2022)"
pauses = [1.0, 2.0]
notes = "Say this."

[[chapter]]
title = "Inline"
caption = "An inline scene"
[chapter.scene]
lab = "manifold2d"
fps = 10
duration = 1.5
[chapter.scene.settings]
lr = 0.2
[[chapter.scene.caption]]
start = 0.0
end = 1.0
text = "hello"
"""


def write(tmp_path, text: str):
    (tmp_path / "scenes").mkdir(exist_ok=True)
    (tmp_path / "scenes" / "two.toml").write_text(SCENE)
    p = tmp_path / "tour.toml"
    p.write_text(text)
    return p


def line_of(text: str, fragment: str, after: str = "") -> int:
    """The 1-based line of the first line containing ``fragment`` (after the first containing ``after``)."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if after in ln) if after else 0
    return next(i for i, ln in enumerate(lines) if i >= start and fragment in ln) + 1


def test_a_good_tour(tmp_path):
    p = write(tmp_path, GOOD)
    t = load_tour(str(p), LABS, FIELDS)
    assert t.title == "A test tour" and t.size == (640, 360) and t.fps == 12
    card, filed, inline = t.chapters
    assert card.card.heading == "Why networks train" and card.card.formula.startswith("\\frac") and card.scene is None
    assert card.duration == 2.5 and card.frames(12) == 30
    assert filed.scene.path == str(tmp_path / "scenes" / "two.toml") and filed.scene.duration == 3.0
    assert filed.pauses == [1.0, 2.0] and filed.steps() == [1.0, 2.0, 3.0] and filed.notes == "Say this."
    assert inline.scene.settings == {"lr": 0.2} and inline.scene.captions[0].text == "hello"
    assert t.frames() == 30 + 36 + 18  # every chapter at the tour's rate
    assert is_tour(str(p)) and not is_tour(str(tmp_path / "scenes" / "two.toml"))
    assert not is_tour(str(tmp_path / "missing.toml"))


@pytest.mark.parametrize("edit, field, line", [
    (("fps = 12", "fps = 'fast'"), "fps", ("fps = 'fast'", "")),
    (("size = [640, 360]", "size = [640]"), "size", ("size = [640]", "")),
    (('title = "From a file"', 'title = ""'), "chapter[1].title", ('title = ""', "")),
    (('notes = "Say this."', 'notes = "Say this."\ncolour = "red"'), "chapter[1].colour", ("colour", "")),
    (("pauses = [1.0, 2.0]", "pauses = [2.0, 1.0]"), "chapter[1].pauses", ("pauses", "")),
    (("pauses = [1.0, 2.0]", "pauses = [1.0, 5.0]"), "chapter[1].pauses", ("pauses", "")),
    (("\\geq \\mu L'", "\\geq \\frac{1}{'"), "chapter[0].card.formula", ("card = {", "")),
    (("duration = 2.5", "duration = 2.5\nscene = 'scenes/two.toml'"), "chapter[0].scene", ('title = "Opening"', "")),
    (('caption = "An inline scene"', 'caption = "An inline scene"\nduration = 3.0'), "chapter[2].duration",
     ("duration = 3.0", "Inline")),
    (("fps = 10\nduration = 1.5", "fps = 'ten'\nduration = 1.5"), "chapter[2].scene.fps", ("fps = 'ten'", "")),
    (("lr = 0.2", "speed = 2"), "chapter[2].scene.settings.speed", ("speed = 2", "")),
])
def test_a_malformed_tour_is_refused_with_file_line_and_field(tmp_path, edit, field, line):
    text = GOOD.replace(*edit)
    assert text != GOOD
    p = write(tmp_path, text)
    with pytest.raises(TourError) as err:
        load_tour(str(p), LABS, FIELDS)
    msg = str(err.value)
    assert msg.startswith(f"{p}: line {line_of(text, *line)}, field '{field}'"), msg


def test_a_chapter_naming_a_missing_scene_names_it(tmp_path):
    text = GOOD.replace("scenes/two.toml", "scenes/gone.toml")
    p = write(tmp_path, text)
    with pytest.raises(TourError) as err:
        load_tour(str(p), LABS, FIELDS)
    msg = str(err.value)
    assert f"line {line_of(text, 'gone.toml')}, field 'chapter[1].scene'" in msg and "'scenes/gone.toml'" in msg
    assert str(tmp_path / "scenes" / "gone.toml") in msg
    # a scene file with its own error: that file, its line and its field
    p = write(tmp_path, GOOD)
    (tmp_path / "scenes" / "two.toml").write_text(SCENE.replace("fps = 10", "fps = [10]"))
    with pytest.raises(SceneError) as err:
        load_tour(str(p), LABS, FIELDS)
    assert str(err.value).startswith(f"{tmp_path / 'scenes' / 'two.toml'}: line 3, field 'fps'")


def test_no_chapters_not_toml_too_big_and_no_eval(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('title = "nothing"\n')
    with pytest.raises(TourError, match="field 'chapter': a tour needs"):
        load_tour(str(p), LABS)
    p.write_text("[[chapter]]\ntitle = = 1\n")
    with pytest.raises(TourError, match="t.toml"):
        load_tour(str(p), LABS)
    p.write_bytes(b"#" * (2 << 20))
    with pytest.raises(SceneError, match="over the 1.0 MB limit of a tour file"):
        load_tour(str(p), LABS)
    p.write_text('[[chapter]]\ntitle = "x"\n[chapter.scene]\nlab = "__import__(\'os\').system(\'true\')"\n')
    with pytest.raises(TourError, match=r"line 4, field 'chapter\[0\].scene.lab': unknown lab"):
        load_tour(str(p), LABS)


@pytest.mark.parametrize("spec, n, want", [("2-4", 5, [1, 2, 3]), ("3", 5, [2]), ("1,3-4", 5, [0, 2, 3]),
                                           ("4-5,1", 5, [0, 3, 4])])
def test_chapter_ranges(spec, n, want):
    assert parse_chapters(spec, n) == want


@pytest.mark.parametrize("spec", ["0-2", "4-2", "6", "a", "1-"])
def test_bad_chapter_ranges(spec):
    with pytest.raises(ValueError, match="--chapters"):
        parse_chapters(spec, 5)
