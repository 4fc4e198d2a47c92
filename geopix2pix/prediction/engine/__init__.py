"""The prediction engine: rasters in, GeoTIFFs out, window by window, knowing nothing of scenes.

`windows` (the window lattice, padded strip reads), `reading` (strips into batches), `forward`
(the generator on batches), `blend` (window weights, strip accumulator), `pipeline` (the four
stages overlapped), `writer` (values and the output GeoTIFF/COG), `runner` (a pipeline run over
rasters into their outputs), `channels` (the queues and stop flag joining the stages).
"""
