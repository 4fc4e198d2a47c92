"""Several scenes predicted by several processes: `torchrun ... -m geopix2pix predict A B ...`.

Under torchrun, rank ``r`` of ``W`` predicts scenes ``r, r + W, r + 2W, ...`` of the list on its
own GPU (LOCAL_RANK), through the ordinary one-process `predict_scenes`. Outputs are named per
scene (``output_paths`` refuses two scenes with one output), so no two ranks write the same file,
and each is written atomically. A failed scene is reported in its result while the rank goes on
with its others; at the end the ranks' results are gathered (gloo, small Python objects) so that
every rank holds all scenes' results, in the order given. Without torchrun, `predict_sharded` is
`predict`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from geopix2pix.models import load_model
from geopix2pix.prediction.outputs import output_paths, stop_reporter
from geopix2pix.prediction.predictor import (
    PathLike,
    SceneResult,
    check_creation_options_for,
    predict,
    predict_scenes,
    resolve_device,
)
from geopix2pix.runtime import distributed
from geopix2pix.runtime.folders import make_folders, remove_folders
from geopix2pix.runtime.stopping import attaches_stop_report
from geopix2pix.settings.predict import PredictKeywords, PredictOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

# A rank waits for the slowest rank's scenes before the results are gathered: allow for days.
GATHER_TIMEOUT = timedelta(days=7)


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """Rank ``rank``'s share of ``items``: items ``rank, rank + world_size, ...``."""
    return list(items[rank::world_size])


def output_folders(pairs: Sequence[tuple[PathLike, PathLike]]) -> list[Path]:
    """Make the outputs' folders (rank 0, before any rank writes, so that no rank whose scene
    fails removes one another rank writes in); those made, outermost first. One that cannot be
    made is left for its scene to fail on."""
    made: list[Path] = []
    for _, path in pairs:
        with contextlib.suppress(OSError):
            made += make_folders(Path(path).parent)
    return made


def rank_device(device: str, local_rank: int) -> torch.device:
    """The device of this rank: its own GPU (LOCAL_RANK) when the device is CUDA."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return resolved


@attaches_stop_report(lambda call: stop_reporter(call["scenes"], call["out"], call["out_dir"]))
def predict_sharded(scenes: PathLike | Sequence[PathLike], out: PathLike | None = None, *,
                    model: PathLike, out_dir: PathLike | None = None,
                    on_warning: Callable[[str], None] | None = None,
                    on_result: Callable[[SceneResult], None] | None = None,
                    **options: Unpack[PredictKeywords]) -> list[SceneResult]:
    """`predict`, with the scenes shared among torchrun's ranks when launched by torchrun.

    Returns every scene's result, in the order given, on every rank (a result gathered from
    another rank carries its ``error`` text but not its exception object). With one scene and
    OUT, a failure raises on the rank that predicted it, as `predict` does. `on_result` hears
    of each of this rank's results as it is known.
    """
    where = distributed.env()
    if not where.launched:
        return predict(scenes, out, model=model, out_dir=out_dir, on_warning=on_warning,
                       on_result=on_result, **options)
    opts = PredictOptions.from_options(**options)
    single = isinstance(scenes, (str, os.PathLike))
    pairs = output_paths([scenes] if single else list(scenes), out, out_dir)
    device = rank_device(opts.device, where.local_rank)
    distributed.init_from_env(device, control_only=True, timeout=GATHER_TIMEOUT)  # until exit
    rank, world = distributed.rank(), distributed.world_size()
    made = distributed.writer_first(lambda: output_folders(pairs)) or []
    try:
        loaded = load_model(model, device=device)  # on every rank: same errors everywhere
        loaded.generator.to(device)
        check_creation_options_for(opts, loaded)
    except BaseException:  # before any rank writes
        remove_folders(made)
        raise
    opts = dataclasses.replace(opts, progress=opts.progress and rank == 0)
    results = predict_scenes(shard(pairs, rank, world), loaded, opts, on_warning=on_warning,
                             on_result=on_result)
    gathered = distributed.all_gather_object(
        [dataclasses.replace(r, exception=None) for r in results])
    remove_folders(made)  # every rank is done: those of failed scenes, while empty, go again
    if out is not None and results and results[0].exception is not None:
        raise results[0].exception
    ordered: list[SceneResult | None] = [None] * len(pairs)
    for r, share in enumerate(gathered):
        for index, result in zip(range(r, len(pairs), world), share):
            ordered[index] = result
    return [r for r in ordered if r is not None]


