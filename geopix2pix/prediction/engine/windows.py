"""Where the prediction windows go over a scene, and reading a row of them reflect-padded.

The windows lie on one global lattice with step ``stride = size * (1 - overlap)`` and the first
origin at ``-margin`` (``margin = (size - stride) // 2``), extended beyond the scene edges so that
every scene pixel is covered by as many windows as an interior pixel: with Hann blending each pixel
then gets the same total weight as in the interior (the part of a window outside the scene is
reflect-padded input). With a blend window that keeps only its centre ``stride x stride`` crop
(``blend="none"``, `BlendWindow.centre_only`), the crops of the lattice tile the scene exactly
from pixel 0.

A scene is processed in column chunks (aligned to the output's 512-pixel blocks) and, within a
chunk, window row by window row, so the accumulation buffers are bounded in both dimensions.
Windows straddling a chunk border are computed for both chunks (a few percent of extra windows on
scenes wider than one chunk, at most about 1/8 in the narrower chunks of a model of many classes,
none on scenes narrower than one chunk).

The input of a window row is one `Strip` (the rows of the whole row of windows of a chunk),
reflect-padded past the scene's edges exactly as the whole scene would be, and the row's windows
are strided views of it. Consecutive strips share ``size - stride`` rows, which are kept from the
strip above rather than read again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.windows import Window

from geopix2pix.raster.blend_windows import BLEND_WINDOWS
from geopix2pix.raster.io import decoded_block_bytes, read_window
from geopix2pix.raster.write import OUTPUT_BLOCK
from geopix2pix.settings.predict import DEFAULT_CHUNK_WIDTH, check_layout_options

MIN_CACHE, MAX_CACHE = 32 * 2**20, 512 * 2**20
CHUNK_CHANNELS = 4  # a chunk of the full width blends up to this many channels (bands, classes)
CHUNK_WINDOWS = 8  # ... and a narrower one is still this many windows wide


def chunk_width_for(chunk_width: int, channels: int, window: int) -> int:
    """The column chunk width for blending `channels` channels of `window`-pixel windows:
    `chunk_width` up to `CHUNK_CHANNELS` channels, narrower beyond (a categorical model blends
    one probability per class: 256 classes would hold 64 times the strip of one band), but at
    least `CHUNK_WINDOWS` windows wide (in whole 512-pixel blocks, up to `chunk_width`): the
    windows straddling a chunk's edge are computed for both chunks, which in chunks of a few
    windows would cost up to twice the forward passes, and in chunks of 8 about 1/8 more."""
    narrowed = chunk_width * CHUNK_CHANNELS // max(channels, CHUNK_CHANNELS)
    floor = -(-CHUNK_WINDOWS * window // OUTPUT_BLOCK) * OUTPUT_BLOCK
    return max(OUTPUT_BLOCK, min(chunk_width, max(narrowed, floor)))


def _offsets(n: int, size: int, stride: int, margin: int, blend: str) -> list[int]:
    """Window origins along one axis of length n."""
    first = -margin
    if not BLEND_WINDOWS[blend].centre_only:
        while first - stride > -size:
            first -= stride
        return list(range(first, n, stride))
    return list(range(first, n - margin, stride))


@dataclass(frozen=True)
class Layout:
    """The window lattice over a scene of ``height x width`` pixels."""

    height: int
    width: int
    size: int
    stride: int
    margin: int
    blend: str
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    def span(self, origin: int) -> tuple[int, int]:
        """The pixels [start, stop) a window at `origin` contributes to along one axis."""
        if BLEND_WINDOWS[self.blend].centre_only:
            return origin + self.margin, origin + self.margin + self.stride
        return origin, origin + self.size

    def chunks(self, chunk_width: int = DEFAULT_CHUNK_WIDTH) -> list[Chunk]:
        """Column chunks [c0, c1) of the scene with the window columns each needs."""
        step = max(OUTPUT_BLOCK, chunk_width // OUTPUT_BLOCK * OUTPUT_BLOCK)
        out = []
        for c0 in range(0, self.width, step):
            c1 = min(c0 + step, self.width)
            cols = tuple(c for c in self.cols if self.span(c)[0] < c1 and self.span(c)[1] > c0)
            out.append(Chunk(c0, c1, cols))
        return out

    def count(self, chunks: Sequence[Chunk]) -> int:
        """Number of windows computed over these chunks."""
        return len(self.rows) * sum(len(ch.cols) for ch in chunks)


@dataclass(frozen=True)
class Chunk:
    """Output columns [col0, col1) and the window column origins that contribute to them."""

    col0: int
    col1: int
    cols: tuple[int, ...]

    @property
    def width(self) -> int:
        return self.col1 - self.col0


def stride_and_margin(size: int, overlap: float) -> tuple[int, int]:
    """The step between windows of `size` px sharing `overlap` of it, and the margin each
    window's kept part leaves (0 at --overlap 0: the window edges are the model's padding)."""
    stride = max(1, int(round(size * (1 - overlap))))
    return stride, (size - stride) // 2


def make_layout(height: int, width: int, size: int, overlap: float, blend: str) -> Layout:
    """The window lattice for a scene; `overlap` is the fraction of the window shared."""
    check_layout_options(overlap, blend)
    stride, margin = stride_and_margin(size, overlap)
    return Layout(height, width, size, stride, margin, blend,
                  tuple(_offsets(height, size, stride, margin, blend)),
                  tuple(_offsets(width, size, stride, margin, blend)))


def _reflect_source(start: int, stop: int, n: int) -> tuple[int, int]:
    """The pixels [a, b) of an axis of length `n` that the reflect-padded range [start, stop)
    needs: the part inside [0, n) and the pixels that reflect padding mirrors past either edge."""
    a, b = max(start, 0), min(stop, n)
    if start < 0:
        b = max(b, min(1 - start, n))
    if stop > n:
        a = min(a, max(2 * n - stop - 1, 0))
    return min(a, n - 1), max(b, a + 1)


def _reflect_crop(array: np.ndarray, axis: int, first: int, start: int, stop: int,
                  n: int) -> np.ndarray:
    """`array` holds pixels [first, first + its length) of an axis of length n along `axis`:
    return pixels [start, stop), reflect-padded past [0, n) (a view when nothing is padded)."""
    pads = (max(0, -start), max(0, stop - n))
    if pads != (0, 0):
        widths = [(0, 0)] * array.ndim
        widths[axis] = pads
        array = np.pad(array, widths, mode="reflect")
        first -= pads[0]
    index = [slice(None)] * array.ndim
    index[axis] = slice(start - first, stop - first)
    return array[tuple(index)]


@dataclass(frozen=True)
class Strip:
    """The input of one window row of a chunk: rows [row, row + size) and columns [col, col +
    span) of the scene, reflect-padded past its edges, where the windows of the row lie at
    columns col, col + stride, ... (`count` of them)."""

    row: int
    col: int
    size: int
    stride: int
    count: int
    data: np.ndarray  # (bands, size, span), the file's dtype unless converted
    valid: np.ndarray  # (size, span)

    @property
    def span(self) -> int:
        return (self.count - 1) * self.stride + self.size

    def windows(self, array: np.ndarray) -> np.ndarray:
        """(count, ..., size, size): every window of `array` (`data`, `valid` or an array of
        the same columns such as the scaled data), as a view."""
        view = sliding_window_view(array, self.size, axis=-1)[..., ::self.stride, :]
        return np.moveaxis(view, -2, 0)


def read_block(dataset, bands: Sequence[int], rows: tuple[int, int],
               cols: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(data, valid) of scene rows [rows) and columns [cols), reflect-padded past the scene's
    edges as the whole scene would be (reading the rows or columns that the padding mirrors)."""
    r0, r1 = _reflect_source(*rows, dataset.height)
    c0, c1 = _reflect_source(*cols, dataset.width)
    data, valid = read_window(dataset, bands, Window(c0, r0, c1 - c0, r1 - r0))
    for axis, first, (start, stop), n in ((-2, r0, rows, dataset.height),
                                          (-1, c0, cols, dataset.width)):
        data = _reflect_crop(data, axis, first, start, stop, n)
        valid = _reflect_crop(valid, axis, first, start, stop, n)
    return data, valid


def read_strip(dataset, bands: Sequence[int], row: int, cols: Sequence[int], size: int) -> Strip:
    """Read the windows at (row, each of the equally spaced `cols`) in one read; see `Strip`.

    Past the scene's edges the strip is reflect-padded as the whole scene would be, so every
    window sees the same padding."""
    stride = cols[1] - cols[0] if len(cols) > 1 else size
    data, valid = read_block(dataset, bands, (row, row + size), (cols[0], cols[-1] + size))
    return Strip(row, cols[0], size, stride, len(cols), data, valid)


def point_reflect(strip: Strip, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(data as float64, valid) of a strip whose padding past the scene's edges is the point
    (odd) reflection ``2 * edge - mirror`` instead of the mirror: a linear extrapolation that
    keeps the slope across the edge, as `gdaldem -compute_edges` assumes for a DEM (the mirror
    makes the terrain flat there). It is the whole scene's odd reflection (numpy's, which goes on
    extrapolating where the padding is wider than the scene), built from the scene pixels the
    strip holds, in it or mirrored into its padding. A padded pixel is valid where every pixel it
    is computed from is. Values past the range of the data are left to the scaling's clip."""
    with np.errstate(invalid="ignore", over="ignore"):
        data = strip.data.astype(np.float64)
    # validity rides along as NaN: it propagates through the reflection's arithmetic exactly
    invalid = np.where(strip.valid, 0.0, np.nan)
    for axis, first, n in ((-2, strip.row, height), (-1, strip.col, width)):
        length = data.shape[axis]
        if first >= 0 and first + length <= n:
            continue
        (lo, hi), take = _scene_block(first, length, n)
        widths = [(0, 0)] * data.ndim
        widths[axis] = (max(0, lo - first), max(0, first + length - hi))
        crop = [slice(None)] * data.ndim
        crop[axis] = slice(first - lo + widths[axis][0], first - lo + widths[axis][0] + length)
        with np.errstate(invalid="ignore", over="ignore"):
            data = np.pad(np.take(data, take, axis=axis), widths, mode="reflect",
                          reflect_type="odd")[tuple(crop)]
            invalid = np.pad(np.take(invalid, take, axis=axis), widths[1:], mode="reflect",
                             reflect_type="odd")[tuple(crop[1:])]
    return data, ~np.isnan(invalid)


def _scene_block(first: int, length: int, n: int) -> tuple[tuple[int, int], np.ndarray]:
    """For a strip holding pixels [first, first + length) of an axis of length n, padded by
    numpy's (even) reflection: the scene pixels [lo, hi) that the odd reflection of that range
    needs (from the scene's edge on each padded side), and for each the strip index that holds
    it (in the strip or mirrored into its padding). The strip only is at hand here, not the
    dataset `_reflect_source` reads from, so numpy's reflect indexing is worked out again."""
    period = max(2 * (n - 1), 1)
    held = np.mod(np.abs(first + np.arange(length)), period)
    held = np.where(held >= n, period - held, held)  # the scene pixel at each strip index
    lo = 0 if first < 0 else max(0, min(first, 2 * n - 1 - first - length))
    hi = n if first + length > n else min(n, max(first + length, 1 - first))
    order = np.argsort(held, kind="stable")
    return (lo, hi), order[np.searchsorted(held[order], np.arange(lo, hi))]


# read(rows, cols, out=None) -> (data, valid): a block, its data written into `out` when given
BlockRead = Callable[..., tuple[np.ndarray, np.ndarray]]
# convert(data, valid, out=None) -> converted data (float32), written into `out` when given
Convert = Callable[..., np.ndarray]


def block_reader(dataset, bands: Sequence[int], convert: Convert | None = None) -> BlockRead:
    """`read(rows, cols, out=None)` -> `read_block` of the dataset, with `convert` (e.g. the
    source scaling) applied to the data when given; the data written into `out` when given."""
    def read(rows: tuple[int, int], cols: tuple[int, int],
             out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        data, valid = read_block(dataset, bands, rows, cols)
        if convert is not None:
            return convert(data, valid, out=out), valid
        if out is not None:
            out[...] = data
            data = out
        return data, valid

    return read


def iter_chunk_strips(read: BlockRead, layout: Layout, chunk: Chunk) -> Iterator[Strip]:
    """The strips of a chunk's window rows, top to bottom, as `read_strip` reads them, through
    `read(rows, cols, out)` (a `block_reader`, possibly converting the data).

    Consecutive window rows overlap by ``size - stride`` rows; those are taken from the strip
    above instead of being read and converted again, so each row of the scene is read about once
    (at overlap 0.5 that halves the reading and scaling). The strips' data lie in one buffer of
    twice a strip's rows, reused for every strip: the new rows are read into it below the shared
    ones, which move to its top only when it runs out of room (no new memory, and no page faults,
    per strip). So a strip's data is valid until the next strip is asked for; its validity is an
    array of its own."""
    size, cols = layout.size, chunk.cols
    stride = cols[1] - cols[0] if len(cols) > 1 else size
    span = (cols[0], cols[-1] + size)
    above: Strip | None = None
    buffer: np.ndarray | None = None
    top = 0  # the buffer row of the strip's first row
    for row in layout.rows:
        shared = 0 if above is None else max(0, above.row + size - row)
        if shared:
            top += row - above.row
            if top + size > buffer.shape[1]:  # no room below: the shared rows to the top
                buffer[:, :shared] = buffer[:, top:top + shared]  # never overlapping
                top = 0
        else:
            top = 0
        rows = (row + shared, row + size)
        if buffer is None:
            data, valid = read(rows, span)
            buffer = np.empty((data.shape[0], 2 * size, data.shape[2]), data.dtype)
            buffer[:, :size] = data
        else:
            _, valid = read(rows, span, out=buffer[:, top + shared:top + size])
        if shared:
            valid = np.concatenate([above.valid[size - shared:], valid], axis=0)
        above = Strip(row, cols[0], size, stride, len(cols), buffer[:, top:top + size], valid)
        yield above


def strip_cache_bytes(dataset, layout: Layout, chunks: Sequence[Chunk], reserve: int = 0) -> int:
    """A GDAL block cache size for reading strips: the decoded blocks one strip touches (all bands
    of a block are decoded together) plus `reserve` bytes (e.g. the output blocks being written),
    within [MIN_CACHE, MAX_CACHE].

    GDAL's default (5% of the RAM) would keep most of a large scene's decoded blocks; this bound
    keeps memory independent of the scene's size while no input block is decoded twice.
    """
    span_cols = max(c.cols[-1] + layout.size - c.cols[0] for c in chunks)
    needed = decoded_block_bytes(dataset, layout.size, span_cols) + reserve
    return int(min(max(needed, MIN_CACHE), MAX_CACHE))
