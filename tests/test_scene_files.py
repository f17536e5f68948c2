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


# --- limits and checks at load time (issue 11): each names the file, the line and the field -------------------
def write(tmp_path, text: str, name: str = "s.toml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def refused(path: str, labs=LABS, fields=FIELDS) -> str:
    with pytest.raises(SceneError) as err:
        load_scene(path, labs, fields)
    msg = str(err.value)
    assert path in msg and len(msg) < 600, msg[:300]
    return msg


@pytest.mark.parametrize("value, kind", [("[" * 3000 + "]" * 3000, "array"),
                                          ("{ a = " * 3000 + "1" + " }" * 3000, "table"),
                                          ("[" * 9 + "1" + "]" * 9, "array"),
                                          ("[[[[[[1]]]]]]", "in set")])
def test_deep_nesting_is_refused_with_line_and_field(tmp_path, value, kind):
    # a deeply nested value raised a bare RecursionError from tomllib
    if kind == "in set":  # event, event[0], set, xs and 4 more arrays: 8 levels are fine, 9 are not
        fine = GOOD.replace("set = { lr = 0.2 }", f"set = {{ xs = {value[1:-1]} }}")
        assert load_scene(write(tmp_path, fine), LABS, FIELDS).events[0].set == {"xs": [[[[[1]]]]]}
        text = GOOD.replace("set = { lr = 0.2 }", f"set = {{ xs = {value} }}")
        assert "line 21, field 'event[0].set.xs[0][0][0][0][0]': nested deeper than 8" in refused(write(tmp_path, text))
        return
    msg = refused(write(tmp_path, GOOD.replace("fps = 25", f"fps = 25\ndeep = {value}")))
    assert "line 6, field 'deep" in msg and "nested deeper than 8" in msg


def test_deeply_nested_tables_from_headers_and_dotted_keys_are_refused(tmp_path):
    text = GOOD.replace("[settings]", "[settings.a.b.c.d.e.f.g.h]\nx = 1\n[settings]")
    assert "field 'settings.a.b.c.d.e.f.g.h'" in refused(write(tmp_path, text))
    text = GOOD.replace("fps = 25", "fps = 25\nq.a.b.c.d.e.f.g.h = 1")  # 8 levels: unknown, but not too deep
    assert "field 'q': unknown field" in refused(write(tmp_path, text))
    text = GOOD.replace("fps = 25", "fps = 25\nq.a.b.c.d.e.f.g.h.i = 1")
    assert "line 6, field 'q.a.b.c.d.e.f.g.h': nested deeper than 8" in refused(write(tmp_path, text))


def test_a_file_over_the_size_limit_is_refused_before_it_is_parsed(tmp_path):
    from models.limits import MAX_SCENE_BYTES

    p = tmp_path / "big.toml"
    p.write_text(GOOD + "#" * MAX_SCENE_BYTES)
    assert "over the 1.0 MB limit" in refused(str(p))
    p.write_text(GOOD + "#" * (MAX_SCENE_BYTES - len(GOOD) - 1) + "\n")  # at the limit: fine
    assert load_scene(str(p), LABS, FIELDS).lab == "manifold2d"


def test_long_titles_and_captions_are_refused(tmp_path):
    # a 50 MB title took 2.4 GB and 104 s to render five tiny frames
    from models.limits import MAX_SCENE_TEXT

    ok = GOOD.replace('lab = "manifold2d"', f'lab = "manifold2d"\ntitle = "{"T" * MAX_SCENE_TEXT}"')
    assert len(load_scene(write(tmp_path, ok), LABS, FIELDS).title) == MAX_SCENE_TEXT
    long_title = GOOD.replace('lab = "manifold2d"', f'lab = "manifold2d"\ntitle = "{"T" * (MAX_SCENE_TEXT + 1)}"')
    msg = refused(write(tmp_path, long_title))
    assert "line 3, field 'title': 2001 characters, over the limit of 2000" in msg
    long_caption = GOOD.replace('text = "Gradient', f'text = "{"c" * 5000} Gradient')
    assert "line 30, field 'caption[0].text': 5041 characters" in refused(write(tmp_path, long_caption))


@pytest.mark.parametrize("table, body, limit", [
    ("event", 'time = 1.0\naction = "reset"', "MAX_SCENE_EVENTS"),
    ("camera", "time = 1.0", "MAX_SCENE_KEYFRAMES"),
    ("caption", 'start = 0.0\nend = 1.0\ntext = "x"', "MAX_SCENE_CAPTIONS"),
])
def test_too_many_events_keyframes_or_captions_are_refused(tmp_path, table, body, limit):
    # 200k events took 2.2 GB
    import visualizer.recording.scene as scene_module

    n = getattr(scene_module, limit)
    head = GOOD.split("[[camera]]")[0]
    ok = head + f"[[{table}]]\n{body}\n" * n
    assert load_scene(write(tmp_path, ok), LABS, FIELDS)
    msg = refused(write(tmp_path, ok + f"[[{table}]]\n{body}\n"))
    assert f"field '{table}': {n + 1} [[{table}]] tables, over the limit of {n}" in msg


def test_a_start_has_as_many_numbers_as_the_labs_parameters(tmp_path):
    # a start of 2k numbers started k descents (over 4 GB); one of the wrong count failed mid-render, with no field
    from visualizer.labs import LABS as REAL

    for n in (1, 3, 2000):
        text = GOOD.replace("start = [1.5, -2.0]", f"start = [{', '.join(['0.5'] * n)}]")
        msg = refused(write(tmp_path, text), REAL, None)
        assert f"line 25, field 'event[1].start': the manifold2d lab's starts have 2 numbers (one per parameter), " \
               f"not {n}" in msg
    three = GOOD.replace('lab = "manifold2d"', 'lab = "manifold3d"').replace('model = "linear"', 'model = "tanh"')
    assert "manifold3d lab's starts have 3 numbers" in refused(write(tmp_path, three), REAL, None)
    sc = load_scene(write(tmp_path, three.replace("start = [1.5, -2.0]", "start = [1.5, -2.0, 0.8]")), REAL)
    assert sc.events[1].start == [1.5, -2.0, 0.8]
    assert "within ±1e+06" in refused(write(tmp_path, GOOD.replace("start = [1.5, -2.0]", "start = [1e300, 0]")))
    # a start goes with an action that takes one
    no_action = GOOD.replace('action = "descent"\n', "")
    assert "field 'event[1].start': 'start' goes with the action 'descent'" in refused(write(tmp_path, no_action))
    other = GOOD.replace('action = "descent"', 'action = "random_starts"')
    assert "field 'event[1].start'" in refused(write(tmp_path, other), REAL, None)


def test_the_start_dimension_of_each_lab():
    from visualizer.labs import LABS as REAL
    from visualizer.recording.scene import start_dimension

    assert start_dimension(REAL["manifold2d"].load()) == 2
    assert start_dimension(REAL["manifold3d"].load()) == 3
    assert start_dimension(REAL["netmanifold"].load()) is None  # (no action of it takes a start)

    class Declared:
        start_dim = 5
        state_cls = None

    assert start_dimension(Declared) == 5


@pytest.mark.parametrize("top, fragment", [
    ("camera = 5", "line 1, field 'camera': expected [[camera]] tables"),
    ("event = [5]", "field 'event[0]': expected a table"),
    ("event = { time = 1 }", "field 'event': expected [[event]] tables"),
    ("caption = 'x'", "field 'caption': expected [[caption]] tables"),
    ("caption = [1]", "field 'caption[0]': expected a table"),
    ("title = 5", "field 'title': expected a string"),
    ("easing = [1]", "field 'easing'"),
    ("size = [true, 240]", "field 'size'"),
    ("seed = " + "1" * 5000, "line 1: cannot read a number"),
    ("fps = 2.5", "field 'fps': expected a whole number"),
    ("fps = 241", "field 'fps': 241 is outside [1, 240]"),
])
def test_wrong_types_are_refused_not_crashed_on(tmp_path, top, fragment):
    # these raised TypeError, AttributeError or ValueError (not SceneError) from load_scene
    text = f'{top}\nlab = "manifold2d"\nduration = 4.0\n'
    assert fragment in refused(write(tmp_path, text))


def test_unknown_fields_of_a_timeline_table_are_refused(tmp_path):
    text = GOOD.replace("start = [1.5, -2.0]", "strat = [1.5, -2.0]")
    assert "line 25, field 'event[1].strat': unknown field; known: time, set, action, start, over" in refused(
        write(tmp_path, text))


def test_quoted_values_in_errors_are_short(tmp_path):
    msg = refused(write(tmp_path, GOOD.replace('lab = "manifold2d"', f'lab = "{"x" * 100_000}"')))
    assert "unknown lab 'xxxx" in msg and "…" in msg
    msg = refused(write(tmp_path, GOOD.replace("fps = 25", f"fps = [{', '.join(['1'] * 50_000)}]")))
    assert "field 'fps': expected a number, got [1, 1," in msg


@pytest.mark.parametrize("title", ["del\x7fete", "nul\x00", "tab\there", 'quote"\\', "line\nbreak", "\u2028 é"])
def test_a_saved_scene_with_any_title_loads_back(tmp_path, title):
    # found by tests/test_scene_fuzz.py: DEL was written as is, which TOML refuses (a saved scene would not load)
    from visualizer.recording.scene import Scene, dump_scene

    sc = Scene(lab="manifold2d", title=title)
    back = load_scene(write(tmp_path, dump_scene(sc)), LABS, FIELDS)
    assert back.title == title


def test_the_recorded_view_is_the_3d_view_or_the_whole_lab(tmp_path):
    from visualizer.recording.scene import dump_scene

    p = tmp_path / "s.toml"
    p.write_text(GOOD)
    assert load_scene(str(p), LABS, FIELDS).view == "3d"
    p.write_text('view = "window"\n' + GOOD)
    sc = load_scene(str(p), LABS, FIELDS)
    assert sc.view == "window"
    p.write_text(dump_scene(sc))
    assert load_scene(str(p), LABS, FIELDS).view == "window"  # written back and read again
    p.write_text('view = "plots"\n' + GOOD)
    with pytest.raises(SceneError, match=r"view.*one of 3d, window"):
        load_scene(str(p), LABS, FIELDS)
