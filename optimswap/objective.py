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
    """Evaluates ``sum weight * loss(features[layer])`` with one encoder pass; zero-weight terms are skipped.

    Terms with a ``refresh(input)`` (the patch losses' nearest-neighbour search) are refreshed on the features of
    the first evaluation after ``refresh()``: the encoder pass that evaluation makes anyway serves both."""

    def __init__(self, encoder: nn.Module | None, terms: list[Term]):
        """``encoder`` may be None when every term reads the image itself."""
        self.encoder = encoder
        self.terms = [t for t in terms if t.weight != 0]
        self.layers = sorted({t.layer for t in self.terms if t.layer is not None})
        if self.layers and encoder is None:
            raise ValueError(f"terms read encoder layers {self.layers} but no encoder was given")
        self.stale = True  # the refreshable terms refresh on the next evaluation

    def refresh(self) -> None:
        """Refresh the refreshable terms on the next evaluation's image."""
        self.stale = True

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        feats = self.encoder(image, self.layers) if self.layers and self.encoder is not None else {}

        def get(term: Term) -> torch.Tensor:
            return image if term.layer is None else feats[term.layer]

        if self.stale:
            with torch.no_grad():
                for term in self.terms:
                    refresh = getattr(term.loss, "refresh", None)
                    if refresh is not None:
                        refresh(get(term))
            self.stale = False
        parts = {t.name: t.weight * t.loss(get(t)) for t in self.terms}
        return sum(parts.values()), {k: v.detach() for k, v in parts.items()}
