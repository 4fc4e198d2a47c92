"""The built-in demo: procedural georeferenced scenes (`make_demo_scenes`) and the end-to-end
pipeline behind `geopix2pix demo` (`run_demo`). Imported lazily by the package so the train and
predict paths never load it."""

from __future__ import annotations

from geopix2pix.demo.scenes import TASKS, DemoScenes, make_demo_scenes

__all__ = ["TASKS", "DemoScenes", "make_demo_scenes"]
