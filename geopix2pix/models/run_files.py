"""The names of the model files a training run writes, declared once: training writes them,
and `load_model` and predict name them to a user who passed a run folder or the other
direction's file.

A run writes the latest weights of each generator at each validation and its best ones when the
validation score improves; Pix2Pix has one generator (A -> B), CycleGAN two (A -> B, B -> A)."""

from __future__ import annotations

# direction -> (latest, best)
RUN_MODELS = {"a_to_b": ("model.safetensors", "model-best.safetensors"),
              "b_to_a": ("model-ba.safetensors", "model-ba-best.safetensors")}
WAYS = {"a_to_b": ("A -> B", "source -> target"), "b_to_a": ("B -> A", "target -> source")}


def described_run_models() -> dict[str, str]:
    """Each model file of a CycleGAN run and what it holds, e.g. "B -> A, the latest epoch"."""
    return {name: f"{WAYS[direction][0]}, {what}"
            for direction, names in RUN_MODELS.items()
            for name, what in zip(names, ("the latest epoch", "the best validation score"))}

