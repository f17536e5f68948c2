"""Scene files: parsed with tomllib, checked field by field, errors name the file, line and field."""

import re

import pytest

from visualizer.recording.scene import SceneError, load_scene

LABS = {"manifold2d": None, "surface": None}
FIELDS = {"manifold2d": {"model", "lr", "xs", "ys", "steps"}}

GOOD = """
lab = "manifold2d"
seed = 3
size = [1280, 720]
fps = 25
duration = 4.0

[settings]
model = "linear"

[[camera]]
time = 0.0
azimuth = 350
[[camera]]
time = 4.0
azimuth = 10
distance = 12

[[event]]
time = 1.0
set = { lr = 0.2 }
[[event]]
time = 1.5
action = "descent"
start = [1.5, -2.0]

[[caption]]
start = 0.5
end = 3.0
text = "Gradient descent lands on the projection"
"""


def test_a_good_scene(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(GOOD)
    s = load_scene(str(p), LABS, FIELDS)
    assert s.lab == "manifold2d" and s.size == (1280, 720) and s.frames == 100
    assert [t for t, _ in s.camera] == [0.0, 4.0] and s.camera[1][1].distance == 12
    assert s.events[0].set == {"lr": 0.2} and s.events[1].action == "descent"
    assert s.captions[0].text.startswith("Gradient")


@pytest.mark.parametrize("edit, fragment", [
    (("fps = 25", "fps = 'fast'"), "line 5, field 'fps'"),
    (('lab = "manifold2d"', 'lab = "nope"'), "unknown lab 'nope'"),
    (('model = "linear"', 'colour = "red"'), "field 'settings.colour'"),
    (("set = { lr = 0.2 }", "set = { speed = 2 }"), "field 'event[0].set.speed'"),
    (('action = "descent"', 'action = "explode"'), "field 'event[1].action'"),
    (("size = [1280, 720]", "size = [10000, 720]"), "field 'size'"),
    (("duration = 4.0", "duration = 4.0\nbogus = 1"), "field 'bogus': unknown field"),
    (("end = 3.0", "end = 0.1"), "field 'caption[0].end'"),
    (("fps = 25", "fps = = 25"), "s.toml"),
])
def test_bad_scenes_name_file_line_and_field(tmp_path, edit, fragment):
    p = tmp_path / "s.toml"
    p.write_text(GOOD.replace(*edit))
    with pytest.raises(SceneError) as err:
        load_scene(str(p), LABS, FIELDS)
    assert fragment in str(err.value) and "s.toml" in str(err.value)


def test_missing_file_and_no_eval(tmp_path):
    with pytest.raises(SceneError, match="cannot read"):
        load_scene(str(tmp_path / "none.toml"))
    p = tmp_path / "evil.toml"
    p.write_text('lab = "__import__(\'os\').system(\'touch /tmp/pwned_losslab\')"\n')
    with pytest.raises(SceneError, match="unknown lab"):
        load_scene(str(p), LABS)
    import os

    assert not os.path.exists("/tmp/pwned_losslab")


def test_gradual_changes_need_numbers(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(GOOD.replace("set = { lr = 0.2 }", "set = { lr = 0.2 }\nover = 1.5"))
    assert load_scene(str(p), LABS, FIELDS).events[0].over == 1.5
    p.write_text(GOOD.replace("set = { lr = 0.2 }", 'set = { model = "tanh" }\nover = 1.5'))
    with pytest.raises(SceneError, match=r"event\[0\]\.set\.model.*only numbers"):
        load_scene(str(p), LABS, FIELDS)
    p.write_text(GOOD.replace('action = "descent"', 'action = "descent"\nover = 2.0'))
    with pytest.raises(SceneError, match=r"event\[1\]\.over"):
        load_scene(str(p), LABS, FIELDS)


@pytest.mark.parametrize("old,new,field", [
    ("time = 1.0", "time = nan", "event[0].time"),
    ("azimuth = 350", "azimuth = inf", "camera[0].azimuth"),
    ("duration = 4.0", "duration = -inf", "duration"),
])
def test_non_finite_numbers_are_refused(tmp_path, old, new, field):
    p = tmp_path / "s.toml"
    p.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(SceneError, match=rf"field '{re.escape(field)}'.*finite"):
        load_scene(str(p), LABS, FIELDS)


def test_a_corrupt_scene_file_is_refused_with_its_name(tmp_path):
    p = tmp_path / "junk.toml"
    p.write_bytes(b"\x00\xff\xfe lab = [[[ \x89PNG")
    with pytest.raises(SceneError, match="junk.toml"):
        load_scene(str(p), LABS, FIELDS)
    with pytest.raises(SceneError, match="cannot read"):
        load_scene(str(tmp_path / "missing.toml"), LABS, FIELDS)
