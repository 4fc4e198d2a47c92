"""Fault battery: model files are untrusted input.

A real model file (trained for two steps, or written by the project's own writer) is tampered
with through the safetensors library the way a damaged or hostile file could be, and each
version must be refused by `geopix2pix predict` (and `load_model`, `show_results`) with exit 2
and one line naming the file, before anything is built from it: no traceback, no huge
allocation, no pickle run. Files written by earlier versions (fields missing) still load.
(Weights changed after writing, against the digest the file records:
test_faults_model_digest.py; checkpoint.pt and --encoder-weights: test_faults_checkpoints.py.)
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fault_helpers import Marker, one_error_line
from predict_helpers import metadata
from safetensors import safe_open
from safetensors.torch import save_file

from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import (
    GeneratorSpec,
    ModelMetadata,
    build_generator,
    load_model,
    save_model,
)


def read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as handle:
        header = json.loads(handle.metadata()["geopix2pix"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    return header, tensors


def write(path: Path, header: dict | str, tensors: dict[str, torch.Tensor]) -> Path:
    text = header if isinstance(header, str) else json.dumps(header)  # NaN as JSON's NaN
    save_file(tensors, str(path), metadata={"geopix2pix": text})
    return path


def tampered(source: Path, out: Path, edit: Callable[[dict, dict], object]) -> Path:
    """`source` with `edit(header, tensors)` applied (a new header when it returns one)."""
    header, tensors = read(source)
    replaced = edit(header, tensors)
    return write(out, header if replaced is None else replaced, tensors)


def first(tensors: dict, suffix: str = "weight") -> str:
    return next(key for key in tensors if key.endswith(suffix) and tensors[key].dim() == 4)


# --- the model file: (case, what the file is made from, the edit, words of the message) -----

def _set(*path_and_value):
    *keys, value = path_and_value

    def edit(header, tensors):
        node = header
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return edit


def _drop_tensor(header, tensors):
    del tensors[first(tensors)]


def _extra_tensor(header, tensors):
    tensors["model.extra.weight"] = torch.zeros(3)


def _wrong_shape(header, tensors):
    key = first(tensors)
    tensors[key] = torch.zeros(*tensors[key].shape[:-1], tensors[key].shape[-1] + 1)


def _wrong_kind(header, tensors):
    key = first(tensors)
    tensors[key] = tensors[key].to(torch.complex64)


def _source_bands(header, tensors):
    header["source"]["bands"] = [1, 2, 3, 4]


def _drop_class(header, tensors):
    header["target"]["classes"] = header["target"]["classes"][:-1]


def _deep(header, tensors):
    return "[" * 100_000 + "]" * 100_000


def _chip_size(size):
    def edit(header, tensors):
        header["generator"]["chip_size"] = header["chip_size"] = size
    return edit


def _huge(header, tensors):  # (safetensors admits a 100 MB header)
    return json.dumps({**header, "notes": "x" * (40 << 20)})


def _float64_overflowing(header, tensors):  # finite in float64, infinite as float32
    for key in tensors:
        tensors[key] = tensors[key].double() if tensors[key].is_floating_point() else tensors[key]
    tensors[first(tensors)] *= 1e300


def _smp_chips_of_33(header, tensors):  # (UNet++ takes multiples of 32; Unet, any size now)
    header["generator"]["name"] = "smp:UnetPlusPlus:resnet18"
    header["generator"]["chip_size"] = header["chip_size"] = 33


MODEL_CASES = [
    ("ngf-4096", "model", _set("generator", "ngf", 4096), "ngf 4096"),
    ("ngf-512-real-tensors", "model", _set("generator", "ngf", 512), "ngf 512"),
    ("40-MB-header", "model", _huge, "holds 40 MB, over the 32 MB a model file may"),
    ("chips-of-4096", "model", _chip_size(4096), "chip_size 4096 is more than geopix2pix"),
    ("chips-of-1", "model", _chip_size(1), "chip_size 1 is less than geopix2pix takes"),
    ("complex64-target", "model", _set("target", "dtype", "complex64"), "complex64"),
    ("nan-target-scaling", "model", _set("target", "scaling", "low", [math.nan]),
     "target.scaling.low[0] is nan"),
    ("inf-source-scaling", "model", _set("source", "scaling", "high", [math.inf]),
     "source.scaling.high[0] is inf"),
    ("scaling-out-of-order", "model", _set("target", "scaling", "low", [1e6]),
     "target.scaling.low[0]"),
    ("huge-scaling-clip", "model", _set("source", "scaling", "clip", 1e9),
     "source.scaling.clip is 1e+09"),
    ("nan-scaling-clip", "model", _set("source", "scaling", "clip", math.nan),
     "source.scaling.clip is nan"),
    ("centre-target-scaling", "model", _set("target", "scaling", "mode", "centre"),
     "cannot be inverted"),
    ("missing-tensor", "model", _drop_tensor, "1 missing"),
    ("extra-tensor", "model", _extra_tensor, "1 unexpected (e.g. model.extra.weight)"),
    ("wrong-shape", "model", _wrong_shape, "1 wrong shape"),
    ("complex-tensor", "model", _wrong_kind, "complex values"),
    ("more-source-bands-than-inputs", "model", _source_bands, "source.bands lists 4 band(s)"),
    ("more-input-channels", "model", _set("generator", "in_channels", 3), "takes 3"),
    ("classes-inconsistent-with-head", "classes", _drop_class, "lists 3 class(es)"),
    ("classes-on-a-regression", "model", _set("target", "classes", [1, 2, 3]), "target.classes"),
    ("classes-out-of-order", "classes", _set("target", "classes", [10, 30, 20, 40]),
     "ascending"),
    ("class-code-beyond-dtype", "classes", _set("target", "classes", [10, 20, 30, 300]),
     "cannot be stored in uint8"),
    ("nodata-beyond-dtype", "model", _set("target", "nodata", -1.0), "cannot be stored in uint8"),
    ("unknown-smp-architecture", "smp", _set("generator", "name", "smp:NoSuchNet:resnet18"),
     "unknown smp architecture 'NoSuchNet'"),
    ("unknown-generator", "model", _set("generator", "name", "resnet"),
     "unknown generator 'resnet'"),
    ("smp-wrong-shape", "smp", _wrong_shape, "1 wrong shape"),
    ("smp-in-channels", "smp", _set("generator", "in_channels", 4), "takes 4"),
    ("smp-logits-without-classes", "smp", _set("generator", "output", "logits"),
     "lists no class(es)"),
    ("non-json-metadata", "model", lambda h, t: "{not json", "unreadable"),
    ("metadata-not-an-object", "model", lambda h, t: "[1, 2]", "unreadable"),
    ("deeply-nested-metadata", "model", _deep, "unreadable"),
    ("generator-not-an-object", "model", _set("generator", "unet"),
     "generator's description is 'unet'"),
    ("huge-chip-size", "model", _set("generator", "chip_size", 2**20), "chip_size 1048576"),
    ("chip-size-differs", "model", _set("chip_size", 128), "chip_size is 128"),
    ("hostile-long-dtype", "model", _set("target", "dtype", "x\n" * 100_000), "target.dtype"),
    ("missing-scaling", "model", _set("target", "scaling", None), "lacks what prediction needs"),
    ("future-format", "model", _set("format_version", 2), "format_version 2"),
    ("zero-pixel-size", "model", _set("pixel_size", [0, 30]), "pixel_size"),
    ("huge-colour-table", "classes", _set("target", "colormap", [[1, 2, 3, 255]] * 70_000),
     "target.colormap has 70000 entries"),
    # a reviewer's crafted files: a traceback, a silently wrong map, a network built for real
    ("float64-weights-past-float32", "model", _float64_overflowing, "NaN or infinite weights"),
    ("integer-past-any-float", "model", _set("source", "scaling", "low", [10**400]),
     "source.scaling.low[0] is 1000000000"),
    ("smp-chips-not-its-multiple", "smp", _smp_chips_of_33, "multiple of 32, got 33"),
    ("a-residual-of-a-million-characters", "model", _set("baselines", "residual", "R" * 10**6),
     "'RRRRRRRR"),
    ("smp-timm-encoder-that-fails", "smp", _set("generator", "name", "smp:Unet:tu-nest_base"),
     "cannot build 'smp:Unet:tu-nest_base'"),
]


def make_case(world, name: str, base: str, edit) -> Path:
    out = world["folder"] / f"{name}.safetensors"
    if not out.exists():
        tampered(world[base], out, edit)
    return out


def scene_for(world, base: str) -> Path:
    return world["scene"] if base == "model" else world["rgb"]


@pytest.mark.parametrize("name, base, edit, words", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_a_tampered_model_file_is_one_line_from_predict(world, capsys, tmp_path, name, base,
                                                        edit, words):
    path = make_case(world, name, base, edit)
    out = tmp_path / "out.tif"
    line = one_error_line(capsys, main(["predict", "-m", str(path), str(scene_for(world, base)),
                                        str(out), "-q", "--device", "cpu"]))
    assert str(path) in line and words in line, line
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["ngf-4096", "complex64-target", "missing-tensor",
                                  "classes-inconsistent-with-head"])
def test_load_model_and_show_results_refuse_it_too(world, name):
    case = next(c for c in MODEL_CASES if c[0] == name)
    path = make_case(world, *case[:3])
    for call in (lambda: load_model(path), lambda: _show_results(path, world["chips"])):
        with pytest.raises(GeoPix2PixError) as caught:
            call()
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def _show_results(path: Path, chips: Path):
    from geopix2pix.plot import show_results

    return show_results(path, chips, n=1)


def test_pickles_and_damaged_files_are_refused_without_running_code(world, capsys, tmp_path):
    marker = tmp_path / "pwned"
    pickled = tmp_path / "pickle.safetensors"
    pickled.write_bytes(pickle.dumps({"w": Marker(marker)}))
    zipped = tmp_path / "torch.safetensors"
    torch.save({"w": Marker(marker)}, zipped)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(world["model"].read_bytes()[:-100])
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    device = Path("/dev/null")  # a tester's --model /dev/null was said not to exist
    for path in (pickled, zipped, truncated, empty, foreign, device):
        line = one_error_line(capsys, main(["predict", "-m", str(path), str(world["scene"]),
                                            str(tmp_path / "out.tif"), "-q"]))
        assert str(path) in line and "not a geopix2pix model file" in line, line
    assert not marker.exists() and not (tmp_path / "out.tif").exists()


LIMIT = """
import resource, sys
resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))
from geopix2pix.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("name", ["ngf-4096", "ngf-512-real-tensors"])
def test_a_model_file_asking_for_gigabytes_is_refused_under_a_memory_limit(world, tmp_path,
                                                                           name):
    """Nothing is built from the header before the tensors are compared with it: under a 3 GB
    data limit (the U-Net it describes needs over 60 GB, or 4 GB) the refusal is one line."""
    case = next(c for c in MODEL_CASES if c[0] == name)
    path = make_case(world, *case[:3])
    done = subprocess.run([sys.executable, "-c", LIMIT, "predict", "-m", str(path),
                           str(world["scene"]), str(tmp_path / "out.tif"), "-q", "--device",
                           "cpu"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and str(path) in done.stderr, done.stderr


# --- files of earlier versions, and the untouched files, still work ----------------------

def _old(header, tensors):
    del header["generator"]["output"], header["weights_sha256"]
    del header["chip_size"], header["crs"], header["pixel_size"], header["version"]
    for side in ("source", "target"):
        for key in ("raster_bands", "classes", "units", "scales", "offsets", "colorinterp",
                    "colormap", "descriptions"):
            header[side].pop(key, None)


@pytest.mark.parametrize("base", ["model", "classes", "smp", "old"])
def test_real_and_older_model_files_predict(world, capsys, tmp_path, base):
    path = world[base] if base != "old" else make_case(world, "old", "model", _old)
    out = tmp_path / "out.tif"
    scene = scene_for(world, "model" if base == "old" else base)
    code = main(["predict", "-m", str(path), str(scene), str(out), "-q", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert out.exists()
    meta = ModelMetadata.of(load_model(path))
    assert meta.chip_size == 64 and meta.categorical == (base == "classes")
    if base == "old":  # what the file lacks reads as unknown, the chip size as the generator's
        assert (meta.crs, meta.pixel_size, meta.target.raster_bands) == (None, None, None)


def test_an_smp_encoder_that_cannot_be_built_on_the_meta_device_still_loads(tmp_path):
    """mit_b0 computes with its weights while being built: its layout comes from a real
    build, and a tampered file of it is still refused."""
    spec = GeneratorSpec("smp:MAnet:mit_b0", 3, 1, 64)
    path = tmp_path / "mit.safetensors"
    save_model(path, build_generator(spec).eval(), spec, metadata(3, 1))
    assert load_model(path).spec == spec
    with pytest.raises(GeoPix2PixError, match="1 unexpected"):
        load_model(tampered(path, tmp_path / "extra.safetensors", _extra_tensor))


def test_a_model_file_is_never_written_with_metadata_its_loader_refuses(tmp_path):
    """The limit on a header is the same for writing and reading: a file the loader would
    refuse is not written (a reviewer's 1024 -> 1024-band linear baseline, 25 MB, had been
    refused by the loader at 16 MB)."""
    spec = GeneratorSpec("unet", 3, 1, 64, ngf=4)
    path = tmp_path / "big.safetensors"
    with pytest.raises(GeoPix2PixError, match="cannot write .*big.safetensors: its metadata "
                                              "holds 40 MB, over the 32 MB"):
        save_model(path, build_generator(spec), spec, {"notes": "x" * (40 << 20)})
    assert list(tmp_path.iterdir()) == []
    save_model(path, build_generator(spec), spec, {"notes": "x" * (25 << 20)})
    assert load_model(path).spec == spec


def test_save_model_refuses_a_link_it_was_given_and_a_run_replaces_its_own(tmp_path):
    """A path the caller names that is a link is refused (the link would become a file); a
    run's own model file that is a link (a run folder copied with cp -rs) is replaced."""
    spec = GeneratorSpec("unet", 3, 1, 64, ngf=4)
    real = tmp_path / "real.safetensors"
    real.write_text("kept")
    link = tmp_path / "link.safetensors"
    link.symlink_to(real)
    with pytest.raises(GeoPix2PixError, match="link.safetensors is a link"):
        save_model(link, build_generator(spec), spec, {})
    save_model(link, build_generator(spec), spec, {}, own=True)
    assert not link.is_symlink() and load_model(link).spec == spec and real.read_text() == "kept"


def test_a_loaded_model_with_hostile_metadata_is_refused_by_the_api(world, tmp_path):
    """A LoadedModel handed to predict() (not read from a file) is checked the same way."""
    from geopix2pix import predict

    loaded = load_model(world["model"])
    loaded.metadata["target"]["dtype"] = "complex64"
    with pytest.raises(GeoPix2PixError, match=r"^model: its model metadata is invalid \(target"
                                              r"\.dtype is 'complex64'"):
        predict(world["scene"], tmp_path / "out.tif", model=loaded, progress=False)
    assert list(tmp_path.iterdir()) == []


# --- a training checkpoint given as the model -------------------------------------------

@pytest.mark.parametrize("name", ["checkpoint.pt", "m.safetensors"])
def test_a_training_checkpoint_given_as_the_model_is_named_as_one(world, capsys, tmp_path,
                                                                 name):
    """A tester's `-m run/checkpoint.pt` was 'not a geopix2pix model file (... header too
    large)': it is recognised (from its pickle's keys, parsed, never run) and the run's model
    files are named; a copy under another name is recognised too."""
    run = world["model"].parent
    path = run / name if name == "checkpoint.pt" else tmp_path / name
    if name != "checkpoint.pt":
        path.write_bytes((run / "checkpoint.pt").read_bytes())
    out = tmp_path / "out.tif"
    line = one_error_line(capsys, main(["predict", "-m", str(path), str(world["scene"]),
                                        str(out), "-q", "--device", "cpu"]))
    assert line.startswith(f"Error: {path} is a training checkpoint, not a model file; pass "), line
    if name == "checkpoint.pt":
        assert line.endswith(f"pass {run / 'model.safetensors'} (the latest epoch) or "
                             f"{run / 'model-best.safetensors'} (the best validation score)")
    else:
        assert "model.safetensors (or model-best.safetensors) that `geopix2pix train`" in line
    assert not out.exists()


def test_a_hostile_string_is_shown_in_short(world, capsys, tmp_path):
    """A residual of a million characters was quoted whole: a 1 MB error line."""
    path = make_case(world, "a-residual-of-a-million-characters", "model",
                     _set("baselines", "residual", "R" * 10**6))
    line = one_error_line(capsys, main(["predict", "-m", str(path), str(world["scene"]),
                                        str(tmp_path / "o.tif"), "-q", "--device", "cpu"]))
    assert len(line) < 400, len(line)


def test_a_chip_size_the_encoder_refuses_is_not_built_again_for_real(world, monkeypatch):
    """The meta build of UNet++ at 33 px chips fails its multiple-of-32 check; retrying it on
    the CPU (as for encoders that compute while built) made a 340-byte file build a 4 GB
    network before failing alike. Only the meta build runs."""
    import geopix2pix.models.io as io

    path = make_case(world, "smp-chips-not-its-multiple", "smp", _smp_chips_of_33)
    devices = []
    real = io.build_generator
    monkeypatch.setattr(io, "build_generator",
                        lambda spec: devices.append(torch.empty(0).device.type) or real(spec))
    with pytest.raises(GeoPix2PixError, match="multiple of 32, got 33"):
        load_model(path)
    assert devices == ["meta"]
