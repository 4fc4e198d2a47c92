"""Model families by name: what ``train(..., model=NAME)`` trains (see `base.ModelFamily`).

Adding a family is one module defining a `ModelFamily` subclass and its line in `FAMILIES`.
"""

from __future__ import annotations

from geopix2pix.errors import GeoPix2PixError

from .base import ModelExport, ModelFamily, RunContext
from .cyclegan import CycleGAN
from .pix2pix import Pix2Pix

FAMILIES: dict[str, type[ModelFamily]] = {Pix2Pix.name: Pix2Pix, CycleGAN.name: CycleGAN}
# every model file and other file any family writes (what --overwrite may replace in a run
# folder, besides the run's own)
MODEL_FILES = tuple(dict.fromkeys(name for family in FAMILIES.values()
                                  for export in family.EXPORTS
                                  for name in (export.latest, export.best)))
FAMILY_FILES = tuple(dict.fromkeys((*MODEL_FILES, *(name for family in FAMILIES.values()
                                                    for name in family.FILES))))


def family_for(name: str) -> type[ModelFamily]:
    """The family called ``name``; a GeoPix2PixError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise GeoPix2PixError(f"--model {name}: unknown model family; use one of "
                              f"{', '.join(FAMILIES)}") from None


__all__ = ["FAMILIES", "FAMILY_FILES", "MODEL_FILES", "ModelExport", "ModelFamily", "RunContext",
           "family_for"]
