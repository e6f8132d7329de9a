"""The lighting network: a small siamese CNN that tells whether two aligned faces are lit the same way.

Korshunova et al. (2017) train such a network on the Extended Yale Face Database B and penalise, during the swap,
the distance between the output's and the source's features in it. Here both branches share ``embed`` and the
classifier is a threshold on the squared embedding distance, so the swap loss (``losses.LightingLoss``) is the
very quantity the classifier thresholds, in units of that threshold.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from optimswap.optim import resize_to

WEIGHTS = Path(__file__).with_name("lighting_net.pt")


class LightingNet(nn.Module):
    """Aligned face frame (B, 3, H, W) in [0, 1] -> lighting embedding (B, dim).

    The input is resized to 64 px: lighting is low-frequency. Average pooling (not max) keeps the gradient with
    respect to the image smooth for L-BFGS. About 230 K parameters, ~16 M multiply-adds per face.
    """

    input_size = 64

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128), dim: int = 64):
        super().__init__()
        layers, channels = [], 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        cells = (self.input_size // 2 ** len(widths)) ** 2
        self.project = nn.Linear(channels * cells, dim)
        # Classifier: P(different lighting) = sigmoid(gain * (distance^2 / threshold - 1)).
        self.log_threshold = nn.Parameter(torch.zeros(()))
        self.log_gain = nn.Parameter(torch.zeros(()))

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) image, got {tuple(image.shape)}")
        x = (resize_to(image, self.input_size) - 0.5) * 4
        return self.project(self.features(x).flatten(1))

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Squared embedding distance of two embeddings in units of the decision threshold (1 = undecided)."""
        return ((a - b) ** 2).sum(1) / self.log_threshold.exp()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Logit of "lit differently" for two batches of aligned faces."""
        return self.log_gain.exp() * (self.distance(self.embed(a), self.embed(b)) - 1)


@functools.cache
def _load(path: str, device: str) -> LightingNet:
    """One network per file and device (moving a shared one would move it under its other users)."""
    net = LightingNet()
    state = torch.load(path, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval().requires_grad_(False).to(device)


def load_lighting_net(device: str | torch.device = "cpu", path: str | Path = WEIGHTS) -> LightingNet:
    """The trained network shipped with the package (``optimswap train-lighting`` makes it)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no lighting-network weights; train them with `optimswap train-lighting`")
    return _load(str(path), str(torch.device(device)))
