"""Where predict writes: each scene's output path (OUT, or DIR/<scene name>.tif, none shared), and
what a stopped prediction left of them (`stop_reporter`: the `StopReport` that `predict` and the
command attach to a Ctrl-C or SIGTERM)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.io import raster_path, scene_name
from geopix2pix.raster.write import case_insensitive, replaced_inputs
from geopix2pix.runtime.distributed import env
from geopix2pix.runtime.stopping import Outputs, Reporter, StopReport, stop_signal

PathLike = str | os.PathLike


def output_paths(scenes: Sequence[PathLike], out: PathLike | None,
                 out_dir: PathLike | None) -> list[tuple[Path | str, Path]]:
    """(scene, output) pairs: OUT for one scene, or DIR/<scene name>.tif for each (`scene_name`;
    a scene given by a GDAL name, /vsicurl/https://.../x.tif, stays that string)."""
    scenes = [raster_path(s) for s in scenes]
    if not scenes:
        raise GeoPix2PixError("no scene given; pass SCENE OUT or SCENES... --out-dir DIR")
    for scene in scenes:  # meant: its rasters (GDAL's complaint would not say so)
        if isinstance(scene, Path) and scene.is_dir():
            raise GeoPix2PixError(f"SCENE {scene} is a folder, not a raster; pass its rasters "
                                  f"(e.g. {scene / '*.tif'}) with --out-dir DIR")
    if out is not None and out_dir is None:
        if len(scenes) != 1:
            raise GeoPix2PixError("several scenes need --out-dir DIR, not one OUT")
        if Path(out).is_dir():  # meant: --out-dir
            raise GeoPix2PixError(f"OUT {out} is a folder; to write <scene name>.tif into it, "
                                  f"pass --out-dir {out} (predict SCENES... --out-dir {out} -m "
                                  "MODEL)")
        if Path(out).suffix.lower() not in (".tif", ".tiff"):
            raise GeoPix2PixError(f"{out}: predict writes a GeoTIFF; name the output .tif")
        return [(scenes[0], Path(out))]
    if out_dir is None or out is not None:
        raise GeoPix2PixError("give either OUT (one scene) or --out-dir DIR, not both or neither")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise GeoPix2PixError(f"--out-dir {out_dir} is a file, not a folder; pass a folder for "
                              "the outputs (one that does not exist is made)")
    outs = [Path(out_dir) / f"{scene_name(s)}.tif" for s in scenes]
    for later, first in shared_outputs(outs).items():
        if _same_scene(scenes[first], scenes[later]):
            raise GeoPix2PixError(f"{scenes[later]} is given twice (scenes {first + 1} and "
                                  f"{later + 1}); give each scene once")
        case = "" if outs[later].name == outs[first].name else \
            " (names that differ only in case are one file in this folder)"
        raise GeoPix2PixError(f"{scenes[first]} and {scenes[later]} would both be "
                              f"written to {outs[first].name} in {out_dir}{case}; rename the "
                              "scenes or predict them separately")
    return list(zip(scenes, outs))


def _same_scene(one: Path | str, other: Path | str) -> bool:
    """Whether two scenes are one file (or one GDAL name)."""
    if isinstance(one, Path) and isinstance(other, Path) and one.exists() and other.exists():
        return os.path.samefile(one, other)
    return one == other


def shared_outputs(outs: Sequence[PathLike]) -> dict[int, int]:
    """{index: index of the first output it shares}: the same path, or one differing only in
    case in a folder where case does not tell files apart (macOS and Windows by default)."""
    exact: dict[str, int] = {}
    folded: dict[str, int] = {}
    shared = {}
    for index, out in enumerate(outs):
        path = os.path.normcase(os.path.abspath(out))
        if path in exact:
            shared[index] = exact[path]
        elif path.casefold() in folded and case_insensitive(Path(path).parent):
            shared[index] = folded[path.casefold()]
        else:
            exact[path] = index
            folded.setdefault(path.casefold(), index)
    return shared


def stop_reporter(scenes: PathLike | Sequence[PathLike], out: PathLike | None = None,
                  out_dir: PathLike | None = None) -> Reporter:
    """What a stop of a prediction of `scenes` (into OUT or DIR/<scene name>.tif) left: how
    many outputs this run completed before the stop (kept, whole), as the prediction reports
    them (the interrupt's `written`, not what is on disk: another process may have written
    there meanwhile; under torchrun, what is on disk, the other ranks' outputs included); those
    being written were removed (their temporaries), and an output that was there before
    (--overwrite) and not yet replaced is as it was."""
    outputs = Outputs(_outputs(scenes, out, out_dir))
    inputs = [scenes] if isinstance(scenes, (str, os.PathLike)) else \
        list(scenes) if isinstance(scenes, Sequence) else []

    def report(stop: BaseException) -> StopReport:
        signum, written = stop_signal(stop), tuple(getattr(stop, "written", ()))
        if env().world_size > 1:  # under torchrun: the ranks' outputs, as they are on disk
            written = tuple(outputs.finished())  # (this rank's `written` are its own only)
        if len(outputs.paths) == 1:
            out = outputs.paths[0]
            if written:
                return StopReport("predict", signum, f"Stopped after {out} was written: it is "
                                  "complete", completed=written)
            earlier = outputs.before[0] is not None
            return StopReport("predict", signum, f"Stopped: {out} was "
                              f"{'not replaced' if earlier else 'not written'} (no partial "
                              "output is left)", kept=out if earlier else None)
        kept = outputs.kept()  # (--overwrite) not replaced yet, nor a scene (opened once each)
        scenes = replaced_inputs(kept, inputs) if kept else {}
        earlier = earlier_kept([path for index, path in enumerate(kept) if index not in scenes])
        if not written:
            return StopReport("predict", signum, "Stopped: nothing was written (no partial "
                              f"outputs are left){earlier}")
        if outputs.paths:
            done = f"{len(written)} of {len(outputs.paths)} scenes: their outputs are"
        else:  # scenes of an iterator: how many there were is not known
            done = "1 scene: its output is" if len(written) == 1 else \
                f"{len(written)} scenes: their outputs are"
        return StopReport("predict", signum, f"Stopped after {done} complete ({named(written)})"
                          f"; those being written were removed{earlier}", completed=written)

    return report


def _outputs(scenes: PathLike | Sequence[PathLike], out: PathLike | None,
             out_dir: PathLike | None) -> list[Path]:
    """The outputs `output_paths` names; none for arguments predict refuses, or for scenes
    that only an iterator yields (reading it here would leave predict none)."""
    single = isinstance(scenes, (str, os.PathLike))
    if not single and not isinstance(scenes, Sequence):
        return []
    try:
        return [Path(path) for _, path in output_paths([scenes] if single else list(scenes),
                                                       out, out_dir)]
    except GeoPix2PixError:
        return []


def named(paths: Sequence[PathLike], most: int = 3) -> str:
    """Paths for a message: the first `most`, then how many more."""
    shown = ", ".join(map(str, paths[:most]))
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


def earlier_kept(kept: Sequence[PathLike]) -> str:
    """What a stopped or failed prediction says of the earlier outputs (--overwrite) it did not
    replace: "; the earlier a.tif is as it was" ("" for none)."""
    if not kept:
        return ""
    return f"; the earlier {named(kept)} " + ("is as it was" if len(kept) == 1 else
                                              "are as they were")
