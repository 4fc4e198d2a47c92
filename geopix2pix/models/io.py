"""The geopix2pix model file: one safetensors file holding a trained generator.

Layout: the tensors are the generator's ``state_dict()`` (contiguous, on the CPU, batch-norm
running statistics included); the safetensors string metadata holds one key, ``"geopix2pix"``,
whose value is ``json.dumps({"format_version": 1, "generator": spec.to_dict(),
"weights_sha256": ..., **metadata})``: the digest of the tensors and of the rest of the header
(`digest.py`), compared when the file is read (files written before it, without the key, are
read without the comparison).

Model files are only ever read through safetensors, never through pickle or ``torch.load``, so
opening a model file from someone else cannot run code. Nor is anything built from what it says
before that is checked: the header against its schema (`metadata.py`, `schema.py`), then the
names, shapes and kinds of the tensors (from the safetensors header, no data read) against the
generator the header describes, built on the meta device (`layout.py`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from geopix2pix.errors import GeoPix2PixError, ModelError
from geopix2pix.raster.write import atomic_path
from geopix2pix.runtime.device import resolve_device
from geopix2pix.settings.checking import api_function

from . import layout
from .baseline import BaselineMaps, ResidualGenerator, check_for_family, with_residual
from .digest import canonical_header, weights_digest
from .factory import ChipSizeError, GeneratorSpec, build_generator
from .layout import Layout
from .metadata import ModelMetadata, metadata_error
from .run_files import RUN_MODELS, described_run_models
from .schema import SchemaError, shown
from .smp_generator import PREFIX as SMP_PREFIX
from .torchfile import pickled_strings

T = TypeVar("T")

METADATA_KEY = "geopix2pix"
FORMAT_VERSION = 1
DIGEST_KEY = "weights_sha256"
RESERVED_KEYS = ("format_version", "generator", DIGEST_KEY)
CHECKPOINT_KEYS = {"format_version", "rng"}  # what every training/checkpoint.py file holds
# The longest header read or written: a model's is kilobytes; its linear baseline grows with
# the bands (224 -> 224: about 1 MB; 1024 -> 1024, `MAX_BANDS`: 25 MB), while safetensors admits
# 100 MB, which as Python objects could take gigabytes to parse.
MAX_METADATA_CHARS = 32 << 20


@dataclass
class LoadedModel:
    """A generator read from a model file: in eval mode, on the requested device.

    ``metadata`` is the dict given to ``save_model`` (without format_version and generator).
    """

    generator: nn.Module
    spec: GeneratorSpec
    metadata: dict[str, Any] = field(default_factory=dict)


def _unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside torch.compile / DataParallel / DistributedDataParallel wrappers
    (and a residual generator's own: the file's metadata says to add the linear map back)."""
    parallel = (nn.DataParallel, nn.parallel.DistributedDataParallel)
    while True:
        if isinstance(module, parallel):
            module = module.module
        elif isinstance(module, ResidualGenerator):
            module = module.inner
        elif isinstance(getattr(module, "_orig_mod", None), nn.Module):
            module = module._orig_mod
        else:
            return module


def _header(spec: GeneratorSpec, metadata: dict[str, Any],
            tensors: dict[str, torch.Tensor]) -> str:
    """The header: format, generator, metadata and the digest of all of them with `tensors`."""
    clash = [k for k in RESERVED_KEYS if k in metadata]
    if clash:
        raise ModelError(f"metadata may not contain the reserved keys {', '.join(clash)}")
    content = {"format_version": FORMAT_VERSION, "generator": spec.to_dict(), **metadata}
    try:
        digest = weights_digest(tensors, canonical_header(json.loads(json.dumps(content))))
        return json.dumps({**content, DIGEST_KEY: digest})
    except (TypeError, ValueError) as exc:
        raise ModelError(f"model metadata must be JSON-serialisable: {exc}") from exc


def save_model(
    path: str | os.PathLike[str],
    generator: nn.Module,
    spec: GeneratorSpec,
    metadata: dict[str, Any],
    own: bool = False,
) -> None:
    """Write ``generator``'s weights, ``spec`` and ``metadata`` (JSON-serialisable) to ``path``.

    The file is written under a temporary name in the same folder and then renamed over
    ``path``, so a reader never sees a half-written model. A ``path`` that is a link is refused,
    unless it is a file of a run's ``own`` folder (training's), which replaces its link.
    """
    from safetensors.torch import save

    path = Path(path)
    state = _unwrap(generator).state_dict()
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    header = _header(spec, metadata, tensors)
    if len(header) > MAX_METADATA_CHARS:  # (what `load_model` would refuse)
        raise GeoPix2PixError(f"cannot write {path}: its metadata holds {len(header) >> 20} MB, "
                              f"over the {MAX_METADATA_CHARS >> 20} MB a model file may")
    content = save(tensors, metadata={METADATA_KEY: header})
    with atomic_path(path, overwrite=True, own=own) as temp, open(temp, "wb") as handle:
        # written by us, not save_file: its files are private (0600), unlike any other output
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _not_a_model(path: Path, why: str = "") -> GeoPix2PixError:
    detail = f" ({why})" if why else ""
    return GeoPix2PixError(
        f"{path} is not a geopix2pix model file{detail}: only safetensors model files written "
        f"by geopix2pix are accepted"
    )


def _model_in(folder: Path) -> str:
    """What to pass instead of a folder: the model files of a run folder, as far as it has any
    (a CycleGAN run's of both directions)."""
    latest, best = (folder / name for name in RUN_MODELS["a_to_b"])
    if (folder / RUN_MODELS["b_to_a"][0]).is_file():
        found = [f"{folder / name} ({what})" for name, what in described_run_models().items()
                 if (folder / name).is_file()]
        return f"pass {', '.join(found[:-1])} or {found[-1]}"
    if latest.is_file() and best.is_file():
        return f"pass {latest} (the latest epoch) or {best} (the best validation score)"
    if latest.is_file() or best.is_file():
        return f"pass {latest if latest.is_file() else best}"
    return (f"pass the {latest.name} (or {best.name}) that `geopix2pix train` writes in its "
            f"run folder (there is none in {folder})")


def _check_path(path: Path) -> None:
    if path.is_dir():
        raise GeoPix2PixError(f"{path} is a folder, not a model file; {_model_in(path)}")
    if path.exists() and not path.is_file():  # a device, a pipe, a socket
        raise _not_a_model(path, "it is not a regular file")
    if not path.is_file():
        raise GeoPix2PixError(f"model file {path} does not exist; pass a run's "
                              "model.safetensors or model-best.safetensors (geopix2pix train "
                              "writes them)")


def _parse_header(path: Path, metadata: dict[str, str]) -> tuple[GeneratorSpec, dict[str, Any]]:
    """The generator spec and user metadata of the ``"geopix2pix"`` header."""
    if METADATA_KEY not in metadata:
        raise _not_a_model(path, f"no {METADATA_KEY!r} metadata")
    text = metadata[METADATA_KEY]
    if len(text) > MAX_METADATA_CHARS:
        raise _not_a_model(path, f"its {METADATA_KEY!r} metadata holds {len(text) >> 20} MB, "
                                 f"over the {MAX_METADATA_CHARS >> 20} MB a model file may")
    try:
        content = json.loads(text)
    except (ValueError, RecursionError) as exc:  # not JSON, or nested past the parser's depth
        raise _not_a_model(path, f"unreadable {METADATA_KEY!r} metadata") from exc
    if not isinstance(content, dict):
        raise _not_a_model(path, f"unreadable {METADATA_KEY!r} metadata")
    version = content.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise GeoPix2PixError(
            f"model file {path} has format_version {shown(version)}; this geopix2pix reads "
            f"version {FORMAT_VERSION} only (upgrade geopix2pix or re-export the model)"
        )
    try:
        spec = GeneratorSpec.from_dict(content.pop("generator", None))
    except (KeyError, TypeError, ValueError) as exc:
        raise _not_a_model(path, f"bad generator description: {exc}") from exc
    return spec, content


def _check_metadata(path: Path, spec: GeneratorSpec, metadata: dict[str, Any]) -> None:
    """Refuse training metadata (a file with a source or target) that is invalid or does not
    describe `spec`'s generator. A file of a generator alone (save_model with other metadata)
    is checked when its metadata is read (`ModelMetadata.of`)."""
    if "source" not in metadata and "target" not in metadata:
        return
    try:
        ModelMetadata.from_dict(metadata, spec.chip_size).check_against(spec)
    except SchemaError as exc:
        raise GeoPix2PixError(metadata_error(f"model file {path}", exc)) from None


def _check_layout(path: Path, spec: GeneratorSpec, found: Layout) -> None:
    """Refuse tensors that are not exactly those of the generator `spec` describes, comparing
    the file's header with the generator built on the meta device (nothing allocated)."""
    try:
        expected = _expected_layout(spec)
    except ValueError as exc:
        raise GeoPix2PixError(f"model file {path}: cannot rebuild generator: {exc}") from None
    differ = layout.mismatch(expected, found)
    if differ:
        raise GeoPix2PixError(
            f"model file {path}: its tensors are not those of its generator ({_described(spec)}):"
            f" {differ}; the file is damaged or was edited: use a model file written by "
            "`geopix2pix train`")


def _expected_layout(spec: GeneratorSpec) -> Layout:
    """The layout of the generator `spec` describes, built on the meta device; ValueError when
    it cannot be built."""
    try:
        with torch.device("meta"):
            return layout.of_state(build_generator(spec).state_dict())
    except ValueError as exc:
        if not spec.name.startswith(SMP_PREFIX) or isinstance(exc, ChipSizeError):
            raise  # (a crafted file's 33 px chips: built for real, 4 GB, before failing again)
    # some smp encoders compute with their weights while being built (mit_b0 calls .item()),
    # which meta tensors cannot: built for real, as bounded as its band counts (the encoder's
    # own size is fixed)
    return layout.of_state(build_generator(spec).state_dict())


def _described(spec: GeneratorSpec) -> str:
    ngf = "" if spec.name.startswith(SMP_PREFIX) else f", ngf {spec.ngf}"
    if spec.name == "local":
        ngf += f", {spec.layers} layers"
    return (f"{spec.name}{ngf}, {spec.in_channels} -> {spec.out_channels} {spec.output} "
            f"channels, {spec.chip_size}-px chips")


def _safetensors(path: Path, read: Callable[[Any], T]) -> T:
    """`read(handle)` of the open safetensors file; GeoPix2PixError for a file safetensors
    cannot read (not one, damaged, truncated)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return read(handle)
    except Exception as exc:  # safetensors raises its own error types for malformed files
        if pickled_strings(path, CHECKPOINT_KEYS) >= CHECKPOINT_KEYS:
            raise GeoPix2PixError(f"{path} is a training checkpoint, not a model file; "
                                  f"{_model_in(path.parent)}") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _not_a_model(path, f"damaged, incomplete or another format: {first[:120]}") \
            from None


def _read(path: Path) -> tuple[GeneratorSpec, dict[str, Any], dict[str, torch.Tensor]]:
    """Spec, metadata and tensors of a model file, every part checked before the next is
    read: the header, the metadata, the tensors' names, shapes and kinds against the
    generator the header describes, and only then the tensors themselves (finite, and those
    whose digest the header records)."""
    _check_path(path)
    header, found = _safetensors(path, lambda h: (h.metadata() or {}, layout.of_safetensors(h)))
    spec, metadata = _parse_header(path, header)
    recorded = metadata.pop(DIGEST_KEY, None)
    _check_metadata(path, spec, metadata)
    _check_layout(path, spec, found)
    tensors = _safetensors(path, lambda h: {k: h.get_tensor(k) for k in h.keys()})  # noqa: SIM118
    if layout.of_state(tensors) != found:  # replaced since its header was read
        raise GeoPix2PixError(f"model file {path} changed while it was read; try again")
    _check_finite(path, tensors)
    content = json.loads(header[METADATA_KEY])  # as written, parsed and checked above
    content.pop(DIGEST_KEY, None)
    _check_digest(path, recorded, weights_digest(tensors, canonical_header(content)))
    return spec, metadata, tensors


def _check_finite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse NaN or infinite weights (damaged bytes, or a diverged training), also as the
    float32 the network loads them as (a float64 1e300 is infinite there)."""
    damaged = [k for k, v in tensors.items()
               if v.is_floating_point() and not v.to(torch.float32).isfinite().all()]
    if damaged:
        raise GeoPix2PixError(
            f"model file {path} holds NaN or infinite weights ({len(damaged)} tensor(s), e.g. "
            f"{shown(damaged[0])}): the file is damaged or training diverged; use another model "
            "file (e.g. model-best.safetensors, or retrain with a lower --lr)")


def _check_digest(path: Path, recorded: Any, digest: str) -> None:
    """Refuse weights or metadata changed since the file was written (`digest`, as read, is
    not the one `recorded`; a file from before the digest, None, is read without it)."""
    if recorded is None:
        return
    if not isinstance(recorded, str):
        raise _not_a_model(path, f"bad {DIGEST_KEY!r} metadata: {shown(recorded)}")
    if digest != recorded:
        raise GeoPix2PixError(
            f"model file {path}: its weights or metadata do not match the digest it records: "
            "the file is damaged; copy it again or retrain")


def _build(spec: GeneratorSpec, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Rebuild the generator and load its weights (checked by `_read`) strictly."""
    generator = build_generator(spec)
    generator.load_state_dict(tensors, strict=True)
    return generator


@api_function
def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Read a model file written by ``save_model``: the generator (eval mode, on ``device``:
    auto, cpu, cuda or cuda:N), its spec and its metadata. Raises GeoPix2PixError for any other
    kind of file (one whose metadata is invalid, or whose tensors are not exactly those of the
    generator it describes: nothing is built from it), and for a device that does not exist
    here."""
    if not isinstance(path, (str, os.PathLike)):
        raise GeoPix2PixError(f"path={path!r}: expected the path of a model file, e.g. "
                              "run/model.safetensors")
    path, device = Path(path), resolve_device(device, "device=")
    spec, metadata, tensors = _read(path)
    generator = _build(spec, tensors).to(device)
    categorical = (metadata.get("target") or {}).get("classes") is not None
    generator = with_residual(generator, _baselines(path, spec, metadata), categorical).eval()
    return LoadedModel(generator=generator, spec=spec, metadata=metadata)


def _baselines(path: Path, spec: GeneratorSpec, metadata: dict[str, Any]) -> BaselineMaps | None:
    """The baselines the file's metadata carries (None in files from before them)."""
    if metadata.get("baselines") is None:
        return None
    try:
        maps = BaselineMaps.from_dict(metadata["baselines"])
        maps.check_shape(spec.source_bands, spec.out_channels)
        check_for_family(maps, metadata.get("family"))
    except ValueError as exc:
        raise _not_a_model(path, f"bad baselines metadata: {exc}") from None
    return maps
