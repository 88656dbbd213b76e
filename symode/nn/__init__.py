"""Learned dynamics: small MLPs on symode's engine (``MLP``), and their training."""

from .mlp import ACTIVATIONS, INITS, INPUT_MAPS, MLP

__all__ = ["ACTIVATIONS", "INITS", "INPUT_MAPS", "MLP"]
