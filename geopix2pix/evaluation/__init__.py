"""Evaluation: comparing predicted rasters with reference rasters (``geopix2pix.evaluate``).

`evaluate` (metrics over the overlap of prediction and reference, and the report), `band_pairing`
(which prediction band is compared with which reference band).
"""
