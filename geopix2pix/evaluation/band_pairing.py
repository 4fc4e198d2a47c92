"""Which bands `evaluate` compares, and warnings about what they hold.

PRED's `bands` (default all data bands) are compared in order with the reference's
`reference_bands` (default all data bands). When `reference_bands` is not given and the counts
differ (or, with no bands given, the same bands come in another order), each PRED band is paired
with the reference band of the same description (B04 with B04), if every PRED band's description
names exactly one reference band. Bands compared in order whose descriptions differ, rasters that
store different kinds of values, and values meaning other quantities (units, scales, offsets) get
a warning: the values are compared as stored.
"""

from __future__ import annotations

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.band_metadata import BandMetadata, meaning_differences, stored_alike
from geopix2pix.raster.bands import band_list_text, check_one_dtype, select_bands

MATCHING = {"in order": "in order", "given": "as given",
            "by description": "matched by band description"}




def values_warnings(pred: str, p, pb: list[int], reference: str, r,
                    rb: list[int]) -> list[str]:
    """Warnings when the rasters store different kinds of values (uint8 against float32 0..1)
    or values meaning other quantities (another unit, scale or offset): they are compared as
    stored, so a difference in units shows as a huge error, not a note."""
    warnings = []
    pred_dtype, ref_dtype = p.dtypes[pb[0] - 1], r.dtypes[rb[0] - 1]
    if not stored_alike(pred_dtype, ref_dtype):
        warnings.append(f"{pred} is {pred_dtype} but {reference} is {ref_dtype}: values are "
                        "compared as stored, so check that both are in the same units")
    differences = meaning_differences(BandMetadata.of(p, pb), BandMetadata.of(r, rb),
                                      reference, [f"band {band}" for band in pb])
    if differences:
        warnings.append(f"{pred}: {'; '.join(differences)}: values are compared as stored, "
                        "so check that both are in the same units")
    return warnings


def unlike_descriptions(p, pb: list[int], r, rb: list[int]) -> list[str]:
    """A warning when bands compared in order are described differently (B04 against B02)."""
    unlike = [f"{a} ({p.descriptions[a - 1]}) with {b} ({r.descriptions[b - 1]})"
              for a, b in zip(pb, rb)
              if p.descriptions[a - 1] and r.descriptions[b - 1]
              and p.descriptions[a - 1] != r.descriptions[b - 1]]
    if not unlike:
        return []
    return [f"bands compared in order are described differently: {', '.join(unlike)}; choose "
            "the reference's with --reference-bands"]


def pair_bands(pred: str, p, bands, reference: str, r,
                reference_bands) -> tuple[list[int], list[int], str]:
    """(PRED's bands, the reference band compared with each, how they were paired)."""
    pb = check_one_dtype(p, select_bands(p, bands, "--bands"), "--bands")
    rb = check_one_dtype(r, select_bands(r, reference_bands, "--reference-bands"),
                         "--reference-bands")
    if len(pb) == len(rb):
        if not bands and not reference_bands:  # B04,B03,B02 against B02,B03,B04: by name
            matched, _ = _match_descriptions(pred, p, pb, reference, r, rb)
            if matched is not None and matched != rb:
                return pb, matched, "by description"
        return pb, rb, "given" if reference_bands else "in order"
    pred_has = (f"--bands {band_list_text(bands)} selects {len(pb)} band(s) of {pred}" if bands
                else f"{pred} has {len(pb)} band(s)")
    if reference_bands:
        raise GeoPix2PixError(f"{pred_has} but --reference-bands {band_list_text(reference_bands)} "
                              f"selects {len(rb)} of {reference}; select as many bands of each, "
                              "in the same order")
    if len(pb) > len(rb):  # not every PRED band can have its own reference band
        raise GeoPix2PixError(
            f"{pred_has} but {reference} has {len(rb)}; choose the {len(rb)} prediction band(s) "
            "to compare, in the reference's band order, with --bands (1-based, e.g. 4,3,2 or "
            "2-4), or the reference's with --reference-bands")
    matched, why = _match_descriptions(pred, p, pb, reference, r, rb)
    if matched is None:
        raise GeoPix2PixError(
            f"{pred_has} but {reference} has {len(rb)}, and {why}; choose the {len(pb)} "
            f"reference band(s) to compare, in the prediction's band order, with "
            f"--reference-bands (1-based, e.g. 4,3,2 or 2-4), or the prediction's with --bands")
    return pb, matched, "by description"


def _match_descriptions(pred: str, p, pb: list[int], reference: str, r,
                        rb: list[int]) -> tuple[list[int] | None, str]:
    """The reference band whose description is each PRED band's (B04 -> the reference's B04),
    or None and why not: a PRED band without description, or one naming no reference band or
    several, or two PRED bands with one description."""
    named: dict[str, list[int]] = {}
    for band in rb:
        named.setdefault(r.descriptions[band - 1] or "", []).append(band)
    matched: list[int] = []
    for band in pb:
        name = p.descriptions[band - 1]
        if not name:
            return None, f"band {band} of {pred} has no description to find it by"
        found = named.get(name, [])
        if len(found) != 1:
            what = f"{len(found)} bands" if found else "no band"
            return None, f"the description {name} of band {band} of {pred} names {what} of " \
                         f"{reference}"
        if found[0] in matched:
            return None, f"two bands of {pred} are described {name}"
        matched.append(found[0])
    return matched, ""
