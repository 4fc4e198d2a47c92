"""Chip export and the chip dataset: `export_chips` cuts paired (or, with ``unpaired=True``,
unpaired) rasters into GeoTIFF chips with their dataset.json, and `ChipDataset` is the torch
Dataset training reads them through."""
