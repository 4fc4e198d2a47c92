"""Fault battery, band lists that name no band: an empty list or a band number below 1, given to
export-chips, predict or evaluate on the command line (`--bands -1` and `--bands=-1` alike) or
through the Python API, is refused in one line naming the option, and nothing is written."""

from __future__ import annotations

import pytest
from test_faults_inputs import one_line

from geopix2pix import GeoPix2PixError, evaluate, export_chips, predict

EMPTY = "no band given; leave the option out for the default bands, or write bands like " \
        "1,2,3 or 1-3"


def _below_one(band: int) -> str:
    return f"band numbers start at 1 (there is no band {band}); write bands like 1,2,3 or 1-3"


BAND_CASES = [
    ("export-chips", "--source-bands", "", f'--source-bands "": {EMPTY}'),
    ("export-chips", "--target-bands", " ", f'--target-bands "": {EMPTY}'),
    ("export-chips", "--source-bands", "-1", f"--source-bands -1: {_below_one(-1)}"),
    ("export-chips", "--target-bands", "1,-2", f"--target-bands 1,-2: {_below_one(-2)}"),
    ("export-chips", "--source-bands", "0", f"--source-bands 0: {_below_one(0)}"),
    ("predict", "--bands", "", f'--bands "": {EMPTY}'),
    ("predict", "--bands", "-1", f"--bands -1: {_below_one(-1)}"),
    ("evaluate", "--bands", "", f'--bands "": {EMPTY}'),
    ("evaluate", "--reference-bands", "", f'--reference-bands "": {EMPTY}'),
    ("evaluate", "--bands", "-3", f"--bands -3: {_below_one(-3)}"),
    # a range past any raster's bands: refused as typed, before a list of a billion is built
    ("evaluate", "--reference-bands", "1-1000000000",
     "--reference-bands 1-1000000000: band 1000000000 is no raster's: band numbers go up to "
     "65535; write bands like 1,2,3 or 1-3"),
    ("evaluate", "--bands", "1-65535,1",
     "--bands 1-65535,1: more than 65535 bands listed, more than any raster holds; write "
     "bands like 1,2,3 or 1-3"),
    ("predict", "--bands", "1-40000,1-40000",
     "--bands 1-40000,1-40000: more than 65535 bands listed, more than any raster holds; write "
     "bands like 1,2,3 or 1-3"),
]


@pytest.mark.parametrize("command, option, value, expected", BAND_CASES)
@pytest.mark.parametrize("joined", [False, True])  # --bands=-1 and --bands -1 alike
def test_a_band_list_naming_no_band_is_refused(inputs, tmp_path, capsys, command, option, value,
                                               expected, joined):
    given = [f"{option}={value}"] if joined else [option, value]
    out = tmp_path / "out"
    args = {"export-chips": ["export-chips", inputs / "s.tif", inputs / "t.tif", "-o", out],
            "predict": ["predict", inputs / "s.tif", out, "-m", inputs / "model.safetensors"],
            "evaluate": ["evaluate", inputs / "s.tif", inputs / "s.tif", "--json", out]}[command]
    assert one_line(capsys, [*args, *given]) == f"Error: {expected}"
    assert not out.exists()


@pytest.mark.parametrize("bands, expected", [([], "[]: " + EMPTY), ([0], "0: " + _below_one(0)),
                                             ([2, -1], "2,-1: " + _below_one(-1))])
def test_the_api_refuses_band_lists_naming_no_band(inputs, tmp_path, bands, expected):
    out = tmp_path / "out"
    calls = [("--source-bands", lambda: export_chips(inputs / "s.tif", inputs / "t.tif", out,
                                                     source_bands=bands, progress=False)),
             ("--target-bands", lambda: export_chips(inputs / "s.tif", inputs / "t.tif", out,
                                                     target_bands=bands, progress=False)),
             ("--bands", lambda: predict(inputs / "s.tif", out / "o.tif",
                                         model=inputs / "model.safetensors", bands=bands)),
             ("--bands", lambda: evaluate(inputs / "s.tif", inputs / "s.tif", bands=bands)),
             ("--reference-bands", lambda: evaluate(inputs / "s.tif", inputs / "s.tif",
                                                    reference_bands=bands))]
    for option, call in calls:
        with pytest.raises(GeoPix2PixError) as caught:
            call()
        assert str(caught.value) == f"{option} {expected}"
    assert not out.exists()


def test_a_long_band_list_is_named_in_short(inputs, tmp_path, capsys):
    """A range past the raster's bands (but within a raster's most) is refused naming the list
    as ranges, not 60,000 numbers; a short list is named as given."""
    args = ["evaluate", inputs / "s.tif", inputs / "s.tif", "--json", tmp_path / "e.json"]
    said = one_line(capsys, [*args, "--reference-bands", "1-60000"])
    assert said.startswith("Error: --reference-bands 1-60000: band 4 does not exist in ")
    said = one_line(capsys, [*args, "--bands", "1,3,5,7,9,11,13,15,17,19,21,23,25,27"])
    assert said.startswith("Error: --bands 1,3,5,7,9,11,13,15,17,19,21,23,...: band 5 does not ")
    assert one_line(capsys, [*args, "--bands", "1,4"]).startswith("Error: --bands 1,4: band 4 ")
