"""The Python API's paths and callbacks are checked before any work: a path given as a number,
or a callback that is not a function, is one GeoPix2PixError naming the argument (a tester's
train(5, ...) was a TypeError, and predict(on_result=5) one after the output was written)."""

from __future__ import annotations

import pytest

import geopix2pix as g
from geopix2pix.errors import GeoPix2PixError


@pytest.mark.parametrize("call, message", [
    (lambda p: g.train(5, p / "run", max_steps=1), "train(): chips_dir=5: expected a path"),
    (lambda p: g.export_chips(3, p / "t.tif", p / "c"), "export_chips(): source=3: expected"),
    (lambda p: g.evaluate(p / "a.tif", 2.5), "evaluate(): reference=2.5: expected a path"),
    (lambda p: g.predict([p / "a.tif"], out_dir=5, model="m"), "predict(): out_dir=5"),
])
def test_a_path_that_is_not_one_is_named(tmp_path, call, message):
    with pytest.raises(GeoPix2PixError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_callback_that_is_not_a_function_is_named_before_any_output(tmp_path, model_file):
    from predict_helpers import write_scene

    scene = write_scene(tmp_path / "s.tif", 40, 40)
    for keyword in ("on_result", "on_warning"):
        with pytest.raises(GeoPix2PixError, match=rf"predict\(\): {keyword}=5: expected a "
                                                  "function or None"):
            g.predict(scene, tmp_path / "out.tif", model=model_file, **{keyword: 5})
        assert not (tmp_path / "out.tif").exists()
    g.predict(scene, tmp_path / "out.tif", model=model_file, on_result=print, progress=False)


def test_model_metadata_of_needs_a_loaded_model():
    with pytest.raises(GeoPix2PixError, match="ModelMetadata.of takes a loaded model"):
        g.ModelMetadata.of(object())
