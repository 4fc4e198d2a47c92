"""The prediction engine: rasters in, GeoTIFFs out, window by window, knowing nothing of scenes.

`model` (the generator with its file's metadata and output), `windows` (the window lattice,
padded strip reads), `reading` (strips into batches), `forward` (the generator on batches),
`blend` (window weights, strip accumulator; the --blend windows are
`geopix2pix.raster.blend_windows`), `pipeline`
(the four stages overlapped), `writer` (output values, the tiled GeoTIFF), `formats` (the output
formats: GTiff, COG), `runner` (a pipeline run over rasters into their outputs), `channels` (the
queues and stop flag joining the stages).
"""
