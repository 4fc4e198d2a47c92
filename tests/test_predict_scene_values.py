"""`geopix2pix predict` on scenes whose values differ from the training sources': other storage,
units or scale, and a repeated band, are warned of with what to do."""

from __future__ import annotations

import numpy as np
import rasterio
from predict_helpers import (
    unet_file,
    write_scene,
)

import geopix2pix as g
from geopix2pix.prediction import predict


def test_a_scene_storing_other_values_than_the_training_sources_gets_a_warning(tmp_path,
                                                                                model_file):
    reflectance = write_scene(tmp_path / "r.tif", 40, 40, dtype="float32", nodata=None,
                              data=np.full((3, 40, 40), 0.05, "float32"))
    messages: list[str] = []
    predict(reflectance, tmp_path / "a.tif", model=model_file, progress=False,
            on_warning=messages.append)
    assert messages == [f"{reflectance}: it is float32 but the model was trained on uint8 "
                        "sources; its values are used as stored and scaled as the training "
                        "rasters' were, so check that they are in the same units, and convert "
                        "them to the training sources' first if not (gdal_translate -scale / "
                        "-unscale)"]
    g.predict([reflectance], out_dir=tmp_path / "many", model=model_file, progress=False,
              on_warning=messages.append)
    assert len(messages) == 2 and messages[1].endswith(messages[0])  # per scene, named
    with rasterio.open(write_scene(tmp_path / "u.tif", 40, 40), "r+") as ds:  # uint8, as trained
        ds.units = ("DN", "DN", "DN")  # the model file records none: nothing to compare
        like_training = ds.name
    predict(like_training, tmp_path / "b.tif", model=model_file, progress=False,
            on_warning=messages.append)
    assert len(messages) == 2


def test_a_scene_in_other_units_or_scale_than_the_training_sources_gets_a_warning(tmp_path):
    from geopix2pix.models import load_model

    model = load_model(unet_file(tmp_path / "m.safetensors"))
    model.metadata["source"].update(units=["reflectance"] * 3, scales=[1e-4] * 3,
                                    offsets=[0.0] * 3)
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    with rasterio.open(scene, "r+") as ds:
        ds.units = ("reflectance", "reflectance", "dB")
        ds.scales = (1e-4, 2e-4, 1e-4)
    messages: list[str] = []
    predict(scene, tmp_path / "a.tif", model=model, progress=False, on_warning=messages.append)
    assert messages == [f"{scene}: band 3 unit dB (training sources: reflectance); band 2 scale "
                        "0.0002 (training sources: 0.0001); its values are used as stored and "
                        "scaled as the training rasters' were, so check that they are in the "
                        "same units, and convert them to the training sources' first if not "
                        "(gdal_translate -scale / -unscale)"]


def test_a_model_of_a_repeated_band_warns_only_when_the_user_repeats_one(tmp_path):
    """A model trained on --source-bands 1,1,1 (a grey band fed to three inputs) reads a grey
    scene the same way without a word; --bands 1,1,2 given at predict is said (a slip?)."""
    model = unet_file(tmp_path / "m.safetensors", source_bands=[1, 1, 1],
                      source_raster_bands=1)
    grey = write_scene(tmp_path / "grey.tif", 40, 40, count=1)
    messages: list[str] = []
    predict(grey, tmp_path / "a.tif", model=model, progress=False, on_warning=messages.append)
    assert not any("more than once" in m for m in messages), messages
    rgb = write_scene(tmp_path / "rgb.tif", 40, 40)
    predict(rgb, tmp_path / "b.tif", model=model, progress=False, bands=[1, 1, 2],
            on_warning=messages.append)
    assert [m for m in messages if "more than once" in m] == [
        f"{rgb}: --bands 1,1,2 reads band 1 more than once: several bands get the same values "
        "(as a grey scene fed to a model of more bands does); check that it is not a slip for "
        "another band"]


def test_a_unit_difference_names_the_scenes_band_not_the_models_input(tmp_path):
    """--bands 2,3,1: the scene's band 1 is the model's input 3; a tester's warning called the
    scene's band 2 'band 1'."""
    from geopix2pix.models import load_model

    model = load_model(unet_file(tmp_path / "m.safetensors"))
    model.metadata["source"].update(units=["metre"] * 3, scales=[1.0] * 3, offsets=[0.0] * 3)
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    with rasterio.open(scene, "r+") as ds:
        ds.units = ("W/m2", "metre", "metre")
    messages: list[str] = []
    predict(scene, tmp_path / "a.tif", model=model, progress=False, bands=[2, 3, 1],
            on_warning=messages.append)
    assert len(messages) == 1 and messages[0].startswith(
        f"{scene}: band 1 (model input 3) unit W/m2 (training sources: metre); its values")


def test_scaled_integers_fed_to_a_model_of_plain_values_are_told_how_to_convert(tmp_path):
    """A tester's Sentinel-2 scene stored as uint16 DNs with a declared scale of 1e-4, fed to a
    model trained on float32 reflectance: one warning, saying how to apply that scale."""
    from geopix2pix.models import load_model

    model = load_model(unet_file(tmp_path / "m.safetensors"))
    model.metadata["source"].update(dtype="float32", units=["reflectance"] * 3,
                                    scales=[1.0] * 3, offsets=[0.0] * 3)
    scene = write_scene(tmp_path / "s2.tif", 40, 40, dtype="uint16",
                        data=np.full((3, 40, 40), 1200, "uint16"))
    with rasterio.open(scene, "r+") as ds:
        ds.units = ("reflectance",) * 3
        ds.scales = (1e-4,) * 3
    messages: list[str] = []
    predict(scene, tmp_path / "a.tif", model=model, progress=False, on_warning=messages.append)
    assert messages == [
        f"{scene}: it is uint16 but the model was trained on float32 sources; band 1 scale "
        "0.0001 (training sources: 1); band 2 scale 0.0001 (training sources: 1); band 3 scale "
        "0.0001 (training sources: 1); its values are used as stored and scaled as the training "
        f"rasters' were, so convert them first: `gdal_translate -unscale -ot Float32 {scene} "
        f"{tmp_path / 's2'}_unscaled.tif` applies the scale and offset its bands declare"]


def test_a_model_of_some_bands_finds_them_elsewhere_in_a_scene_stored_otherwise(tmp_path):
    """A reviewer's model of Sentinel-2 bands 4,3,2 (of 13) read a 13-band scene stored in
    reverse at positions 4,3,2 (B09, B10, B11) without a word: the model's bands, found by their
    descriptions elsewhere in the scene, are named with the --bands that feeds them."""
    model = unet_file(tmp_path / "m.safetensors", source_bands=[4, 3, 2], source_raster_bands=5)
    scene = write_scene(tmp_path / "s.tif", 40, 40, count=5)
    with rasterio.open(scene, "r+") as ds:  # the model's inputs are described band 4, 3, 2
        for band, text in enumerate(("band 4", "band 3", "band 2", "band 9", "band 10"), 1):
            ds.set_band_description(band, text)
    messages: list[str] = []
    predict(scene, tmp_path / "a.tif", model=model, progress=False, on_warning=messages.append)
    assert messages == [f"{scene}: its bands 4,3,2 are described band 9, band 2, band 3, not as "
                        "the model's inputs band 4, band 3, band 2, which are its bands 1,2,3; "
                        "pass --bands 1,2,3 to feed them in the model's order"]
    predict(scene, tmp_path / "b.tif", model=model, bands=[1, 2, 3], progress=False,
            on_warning=messages.append)
    assert len(messages) == 1
    with rasterio.open(scene, "r+") as ds:  # a name twice: no sign of where they are
        ds.set_band_description(5, "band 4")
    predict(scene, tmp_path / "c.tif", model=model, progress=False, on_warning=messages.append)
    assert len(messages) == 1


def test_a_scene_of_the_training_bands_in_another_order_gets_a_warning(tmp_path, model_file):
    """A tester's scene stored B04, B03, B02 for a model of B02, B03, B04 (by the bands'
    descriptions) was predicted silently from swapped bands."""
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    with rasterio.open(scene, "r+") as ds:  # the model's inputs are described band 1..3
        for band, text in zip((1, 2, 3), ("band 3", "band 1", "band 2")):
            ds.set_band_description(band, text)
    messages: list[str] = []
    predict(scene, tmp_path / "a.tif", model=model_file, progress=False,
            on_warning=messages.append)
    assert messages == [f"{scene}: its bands 1,2,3 are described band 3, band 1, band 2 and the "
                        "model's inputs band 1, band 2, band 3: the same bands in another order; "
                        "pass --bands 2,3,1 to feed them in the model's order"]
    predict(scene, tmp_path / "b.tif", model=model_file, bands=[2, 3, 1], progress=False,
            on_warning=messages.append)
    assert len(messages) == 1  # in the model's order now
    with rasterio.open(scene, "r+") as ds:  # other names say nothing of the order
        ds.set_band_description(1, "red")
    predict(scene, tmp_path / "c.tif", model=model_file, progress=False,
            on_warning=messages.append)
    assert len(messages) == 1
