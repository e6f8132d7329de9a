"""A weighted sum of loss terms on encoder features (or on the image itself)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Term:
    name: str
    weight: float
    loss: nn.Module
    layer: str | None  # encoder layer it reads; None = the image


class Objective:
    """Evaluates ``sum weight * loss(features[layer])`` with one encoder pass; zero-weight terms are skipped."""

    def __init__(self, encoder: nn.Module | None, terms: list[Term]):
        """``encoder`` may be None when every term reads the image itself."""
        self.encoder = encoder
        self.terms = [t for t in terms if t.weight != 0]
        self.layers = sorted({t.layer for t in self.terms if t.layer is not None})
        if self.layers and encoder is None:
            raise ValueError(f"terms read encoder layers {self.layers} but no encoder was given")

    def _inputs(self, image: torch.Tensor):
        feats = self.encoder(image, self.layers) if self.layers and self.encoder is not None else {}
        return lambda term: image if term.layer is None else feats[term.layer]

    def refresh(self, image: torch.Tensor) -> None:
        get = self._inputs(image)
        for term in self.terms:
            refresh = getattr(term.loss, "refresh", None)
            if refresh is not None:
                refresh(get(term))

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        get = self._inputs(image)
        parts = {t.name: t.weight * t.loss(get(t)) for t in self.terms}
        return sum(parts.values()), {k: v.detach() for k, v in parts.items()}
