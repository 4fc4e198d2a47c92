"""Raster I/O under every stage, with rasterio and no torch: opening and reading rasters with
one-line errors, pixel grids, GeoTIFF writing that never leaves a partial file, band metadata,
rendering arrays as pictures, and the --blend windows."""
