"""Fault battery, model files: the digest of its weights and metadata that a model file records.
A file whose finite weights or metadata changed after writing (a flipped bit, a scaled tensor, a
moved scaling bound) is refused by predict and load_model in one line; a trained run's files
record the digest, a file from before the digest loads unchecked, and a digest that is not a
string is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fault_helpers import one_error_line
from test_faults_model_files import _set, first, read, tampered

from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import load_model
from geopix2pix.models.digest import canonical_header, weights_digest


def _flip_a_weight_byte(source: Path, out: Path) -> Path:
    """`source` with one bit of one byte in the middle of a conv weight's data flipped, in
    place: a damaged disk or copy (safetensors itself reads it without complaint)."""
    data = bytearray(source.read_bytes())
    size = int.from_bytes(data[:8], "little")
    entries = json.loads(data[8:8 + size])
    name = first({k: torch.zeros(v["shape"]) for k, v in entries.items() if k != "__metadata__"})
    begin, end = entries[name]["data_offsets"]
    data[8 + size + (begin + end) // 2 + 1] ^= 0x04  # a mantissa bit: the value stays finite
    out.write_bytes(bytes(data))
    return out


def _scale_a_tensor(header, tensors):
    tensors[first(tensors)] *= 1.5


def _move_a_statistic(header, tensors):
    """A scaling bound changed (a flipped bit in a number of the header): still valid
    metadata, another map."""
    header["target"]["scaling"]["high"][0] *= 1.5


@pytest.mark.parametrize("damage", ["flipped-byte", "scaled-tensor", "moved-statistic"])
def test_weights_changed_after_writing_are_refused(world, capsys, tmp_path, damage):
    """Finite weights changed after writing (a tester's bit flips: predict exited 0 with 97.7 %
    of the map different) are refused by predict and load_model: their digest differs."""
    path = world["folder"] / f"{damage}.safetensors"
    if damage == "flipped-byte":
        _flip_a_weight_byte(world["model"], path)
    else:
        tampered(world["model"], path, _scale_a_tensor if damage == "scaled-tensor"
                 else _move_a_statistic)
    assert read(path)[1].keys() == read(world["model"])[1].keys()  # safetensors reads it
    out = tmp_path / "out.tif"
    line = one_error_line(capsys, main(["predict", "-m", str(path), str(world["scene"]),
                                        str(out), "-q", "--device", "cpu"]))
    assert line == (f"Error: model file {path}: its weights or metadata do not match the digest "
                    "it records: the file is damaged; copy it again or retrain"), line
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(GeoPix2PixError, match="do not match the digest") as caught:
        load_model(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_trained_model_file_records_the_digest_of_its_weights(world):
    """The digest survives train -> model file -> predict: both files of a real run record
    the digest of the tensors they hold, and load (predict: test_real_and_older_...)."""
    for name in ("model.safetensors", "model-best.safetensors"):
        path = world["model"].parent / name
        header, tensors = read(path)
        recorded = header.pop("weights_sha256")
        assert recorded == weights_digest(tensors, canonical_header(header))
        assert "weights_sha256" not in load_model(path).metadata  # not the caller's metadata


def test_a_model_file_from_before_the_digest_loads_unchecked(world, capsys, tmp_path):
    """A file written before the digest existed has none to compare: it loads and predicts."""
    def without_digest(header, tensors):
        del header["weights_sha256"]
        _scale_a_tensor(header, tensors)
    path = tampered(world["model"], tmp_path / "before.safetensors", without_digest)
    assert load_model(path).metadata == load_model(world["model"]).metadata
    out = tmp_path / "out.tif"
    code = main(["predict", "-m", str(path), str(world["scene"]), str(out), "-q", "--device",
                 "cpu"])
    assert code == 0, capsys.readouterr().err
    assert out.exists()


def test_a_digest_that_is_not_a_string_is_refused(world, tmp_path):
    path = tampered(world["model"], tmp_path / "odd.safetensors",
                    _set("weights_sha256", [1, 2]))
    with pytest.raises(GeoPix2PixError, match="bad 'weights_sha256' metadata"):
        load_model(path)
