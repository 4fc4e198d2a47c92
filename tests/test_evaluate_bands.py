"""`geopix2pix evaluate` pairs the prediction's bands with the reference's by their descriptions
(fewer bands, another order, class maps), or as --bands / --reference-bands say."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_raster

from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.evaluation.evaluate import evaluate

S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def _s2_pair(tmp_path, pred_descriptions=("B04", "B03", "B02"), ref_descriptions=S2):
    """A 13-band reference and a 3-band prediction of its bands 4,3,2 plus 1, 2 and 3."""
    ref = np.random.default_rng(5).integers(100, 5000, (13, 20, 20)).astype("uint16")
    pred = ref[[3, 2, 1]] + np.array([1, 2, 3], "uint16")[:, None, None]
    return (str(write_raster(tmp_path / "cc_pred.tif", pred, descriptions=pred_descriptions)),
            str(write_raster(tmp_path / "s2.tif", ref, descriptions=ref_descriptions)))


def test_fewer_bands_are_paired_with_the_references_by_description(tmp_path, capsys):
    pred, ref = _s2_pair(tmp_path)
    report = evaluate(pred, ref)
    assert report.pred_bands == [1, 2, 3] and report.reference_bands == [4, 3, 2]
    assert report.band_matching == "by description"
    assert [(b.band, b.description, b.reference_band, b.reference_description, b.mae)
            for b in report.bands] == [(1, "B04", 4, "B04", 1.0), (2, "B03", 3, "B03", 2.0),
                                       (3, "B02", 2, "B02", 3.0)]
    assert main(["evaluate", pred, ref, "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "bands compared: prediction 1,2,3 with reference 4,3,2 (matched by band " \
           "description)" in out
    assert out[-4].startswith("1 B04            4 B04                       1")
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["reference_bands"] == [4, 3, 2] and saved["band_matching"] == "by description"
    assert [(b["band"], b["reference_band"], b["reference_description"])
            for b in saved["bands"]] == [(1, 4, "B04"), (2, 3, "B03"), (3, 2, "B02")]


def test_the_same_bands_in_another_order_are_paired_by_description(tmp_path):
    data = np.random.default_rng(6).integers(100, 5000, (3, 20, 20)).astype("uint16")
    pred = str(write_raster(tmp_path / "p.tif", data, descriptions=("B04", "B03", "B02")))
    ref = str(write_raster(tmp_path / "r.tif", data[::-1], descriptions=("B02", "B03", "B04")))
    report = evaluate(pred, ref)
    assert (report.reference_bands, report.band_matching) == ([3, 2, 1], "by description")
    assert report.overall["mae"] == 0
    in_order = evaluate(pred, ref, reference_bands=[1, 2, 3])  # as asked, even if unnamed
    assert in_order.band_matching == "given" and in_order.overall["mae"] > 0


def _choose(pred, ref, why):
    return (f"Error: {pred} has 3 band(s) but {ref} has 13, and {why}; choose the 3 reference "
            "band(s) to compare, in the prediction's band order, with --reference-bands "
            "(1-based, e.g. 4,3,2 or 2-4), or the prediction's with --bands")


@pytest.mark.parametrize("pred_descriptions, ref_descriptions, why", [
    (None, S2, "band 1 of {pred} has no description to find it by"),
    (("B04", "B03", "B13"), S2, "the description B13 of band 3 of {pred} names no band of {ref}"),
    (("B04", "B03", "B02"), S2[:3] + ["B02"] + S2[4:],
     "the description B04 of band 1 of {pred} names no band of {ref}"),
    (("B04", "B03", "B02"), S2[:1] + ["B03"] + S2[2:],
     "the description B03 of band 2 of {pred} names 2 bands of {ref}"),
    (("B04", "B04", "B02"), S2, "two bands of {pred} are described B04"),
])
def test_unmatched_band_counts_ask_for_reference_bands(tmp_path, capsys, pred_descriptions,
                                                       ref_descriptions, why):
    pred, ref = _s2_pair(tmp_path, pred_descriptions, ref_descriptions)
    assert main(["evaluate", pred, ref]) == 2
    assert capsys.readouterr().err.strip() == _choose(pred, ref, why.format(pred=pred, ref=ref))


def test_reference_bands_and_bands_choose_what_is_compared(tmp_path, capsys):
    pred, ref = _s2_pair(tmp_path, None)
    for argv, maes in [(["--reference-bands", "4,3,2"], [1, 2, 3]),
                       (["--reference-bands", "3-4", "--bands", "2,1"], [2, 1]),
                       (["--bands", "3", "--reference-bands", "2"], [3])]:
        assert main(["evaluate", pred, ref, "--json", str(tmp_path / "e.json"), "--overwrite",
                     *argv]) == 0
        assert "(as given)" in capsys.readouterr().out
        saved = json.loads((tmp_path / "e.json").read_text())
        assert [b["mae"] for b in saved["bands"]] == maes
    report = evaluate(pred, ref, reference_bands=(np.int64(4), 3, 2), bands=[1, 2, 3])
    assert report.reference_bands == [4, 3, 2] and report.band_matching == "given"
    for argv, message in [
        (["--bands", "1,2", "--reference-bands", "4-6"],
         f"--bands 1,2 selects 2 band(s) of {pred} but --reference-bands 4,5,6 selects 3 of "
         f"{ref}; select as many bands of each, in the same order"),
        (["--reference-bands", "4,3"],
         f"{pred} has 3 band(s) but --reference-bands 4,3 selects 2 of {ref}; select as many "
         "bands of each, in the same order"),
        (["--reference-bands", "4,3,14"],
         f"--reference-bands 4,3,14: band 14 does not exist in {ref}, which has 13 band(s); "
         "use indexes 1..13"),
        (["--reference-bands", "4-2"], "--reference-bands 4-2: a range goes up, e.g. 2-4"),
        (["--bands", "4"], f"--bands 4: band 4 does not exist in {pred}, which has 3 band(s); "
                           "use indexes 1..3"),
    ]:
        assert main(["evaluate", pred, ref, *argv]) == 2
        assert capsys.readouterr().err.strip() == f"Error: {message}"
    assert main(["evaluate", ref, pred]) == 2  # more PRED bands: choose them
    assert capsys.readouterr().err.strip() == (
        f"Error: {ref} has 13 band(s) but {pred} has 3; choose the 3 prediction band(s) to "
        "compare, in the reference's band order, with --bands (1-based, e.g. 4,3,2 or 2-4), or "
        "the reference's with --reference-bands")
    assert main(["evaluate", ref, pred, "--bands", "4,3,2", "--json", str(tmp_path / "e.json"),
                 "--overwrite"]) == 0
    assert [b["mae"] for b in json.loads((tmp_path / "e.json").read_text())["bands"]] == [1, 2, 3]
    with pytest.raises(GeoPix2PixError, match=r"^reference_bands=4: expected a list of "):
        evaluate(pred, ref, reference_bands=4)


def test_categorical_bands_are_paired_by_description(tmp_path):
    classes = np.random.default_rng(2).integers(1, 4, (20, 20)).astype("uint8")
    confidence = np.full((20, 20), 200, "uint8")
    ref = write_raster(tmp_path / "r.tif", np.stack([confidence, classes]),
                       descriptions=["confidence", "class"])
    pred = write_raster(tmp_path / "p.tif", classes, descriptions=["class"])
    report = evaluate(pred, ref, categorical=True)
    assert report.reference_bands == [2] and report.band_matching == "by description"
    assert report.classes == [1, 2, 3] and report.pixel_accuracy == 1.0
    assert "bands compared: prediction 1 with reference 2 (matched by band description)" \
        in report.table()
