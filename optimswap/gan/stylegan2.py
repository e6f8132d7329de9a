"""StyleGAN2 (Karras et al. 2020) generator in plain PyTorch, CPU or GPU, no compiled extension.

Parameter and buffer names and shapes are those of NVlabs stylegan2-ada-pytorch (``training/networks.py``,
``G_ema``), so its FFHQ checkpoints load by name; rosinality's stylegan2-pytorch state dicts are renamed onto them
(``from_rosinality``). The architecture (resolution, channels, mapping depth) is read from the weights. The
resampling FIR and the biased activation are the reference formulas of NVlabs' ``upfirdn2d`` and ``bias_act``;
modulation is applied to the activations rather than folded into per-sample weights (the same arithmetic, and
batches share one convolution).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping as MappingType
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from optimswap.errors import BackendUnavailable

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
FIR = (1.0, 3.0, 3.0, 1.0)  # the binomial resampling filter of every StyleGAN2 release
# A checkpoint without a mean W gets one from this many mapped samples (rosinality's generate.py averages 4096 for
# its truncation), drawn from a fixed seed so that a file always loads the same.
MEAN_W_SAMPLES, MEAN_W_SEED = 4096, 0


def fir_filter(taps: Sequence[float] = FIR) -> torch.Tensor:
    """The separable 2-D filter, normalised to sum 1, as NVlabs stores it (``resample_filter``)."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int, pad: tuple[int, int, int, int], gain: float) -> torch.Tensor:
    """Insert ``up - 1`` zeros between samples, pad (x0, x1, y0, y1), filter with ``f * gain`` (symmetric, so the
    flip of a true convolution does not matter)."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x = F.pad(x, list(pad))
    kernel = (f * gain).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, kernel, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling of the skip image (NVlabs ``upsample2d`` with a 4-tap filter: pad 2 before, 1 after)."""
    return upfirdn2d(x, f, up=2, pad=(2, 1, 2, 1), gain=4.0)


def bias_act(x: torch.Tensor, bias: torch.Tensor, lrelu: bool, gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    x = x + bias.to(x.dtype).reshape(1, -1, 1, 1)
    if lrelu:
        x = F.leaky_relu(x, LRELU_SLOPE) * (LRELU_GAIN * gain)
    elif gain != 1.0:
        x = x * gain
    return x if clamp is None else x.clamp(-clamp, clamp)


class FullyConnected(nn.Module):
    """Equalized-learning-rate linear layer: weights stored at ``1 / lr_mul`` scale, applied with
    ``lr_mul / sqrt(fan_in)``."""

    def __init__(self, in_features: int, out_features: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 lrelu: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain, self.bias_gain, self.lrelu = lr_mul / math.sqrt(in_features), lr_mul, lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN if self.lrelu else x


class Mapping(nn.Module):
    """z -> w: pixel-norm, then ``layers`` lrelu layers at a 100x lower learning rate; ``w_avg`` for truncation."""

    w_avg: torch.Tensor

    def __init__(self, z_dim: int, w_dim: int, layers: int, hidden: int, lr_mul: float = 0.01):
        super().__init__()
        dims = [z_dim] + [hidden] * (layers - 1) + [w_dim]
        for i in range(layers):
            self.add_module(f"fc{i}", FullyConnected(dims[i], dims[i + 1], lr_mul=lr_mul, lrelu=True))
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.layers = layers

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.layers):
            x = getattr(self, f"fc{i}")(x)
        return x


def modulated_conv(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                   resample_filter: torch.Tensor | None = None) -> torch.Tensor:
    """Modulated (and demodulated) convolution. With ``resample_filter``: 2x upsampling by a stride-2 transposed
    convolution followed by the FIR (NVlabs ``conv2d_resample``'s fast path: FIR padding 1 each side for 3x3)."""
    x = x * styles.to(x.dtype)[:, :, None, None]
    w = weight.to(x.dtype)
    if resample_filter is not None:
        x = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
        x = upfirdn2d(x, resample_filter, up=1, pad=(1, 1, 1, 1), gain=4.0)
    else:
        x = F.conv2d(x, w, padding=w.shape[-1] // 2)
    if demodulate:
        # Per-sample norm of the modulated weight, applied to the output channels.
        dcoefs = ((w[None] * styles[:, None, :, None, None]).square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
        x = x * dcoefs.to(x.dtype)[:, :, None, None]
    return x


class SynthesisLayer(nn.Module):
    affine: FullyConnected
    noise_const: torch.Tensor
    resample_filter: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool,
                 conv_clamp: float | None):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", fir_filter())
        self.up, self.conv_clamp = up, conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = modulated_conv(x, self.weight, self.affine(w), True, self.resample_filter if self.up else None)
        x = x + (self.noise_const if noise is None else noise) * self.noise_strength
        return bias_act(x, self.bias, lrelu=True, clamp=self.conv_clamp)


class ToRGB(nn.Module):
    affine: FullyConnected

    def __init__(self, in_channels: int, img_channels: int, w_dim: int, conv_clamp: float | None):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain, self.conv_clamp = 1 / math.sqrt(in_channels), conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = modulated_conv(x, self.weight, self.affine(w) * self.weight_gain, False)
        return bias_act(x, self.bias, lrelu=False, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (the 4x4 constant | an upsampling conv), a conv, and a toRGB added to the upsampled skip."""

    resample_filter: torch.Tensor
    conv0: SynthesisLayer
    conv1: SynthesisLayer
    torgb: ToRGB

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None):
        super().__init__()
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, True, conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, False, conv_clamp)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp)
        self.register_buffer("resample_filter", fir_filter())
        self.first = in_channels == 0
        self.num_conv = 1 if self.first else 2

    def layers(self) -> list[SynthesisLayer]:
        return [self.conv1] if self.first else [self.conv0, self.conv1]

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noises: Sequence[torch.Tensor | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """``ws``: (N, num_conv + 1, w_dim), the last one for toRGB (shared with the next block's first conv)."""
        if x is None:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        for i, layer in enumerate(self.layers()):
            x = layer(x, ws[:, i], noises[i])
        y = self.torgb(x, ws[:, self.num_conv])
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


@dataclass(frozen=True)
class Architecture:
    resolution: int
    channels: tuple[int, ...]  # per block, 4 px first
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_hidden: int = 512
    img_channels: int = 3
    conv_clamp: float | None = 256.0  # NVlabs' configs with mixed precision clamp conv outputs at +-256
    mapping_lr: float = 0.01

    @classmethod
    def nvlabs(cls, resolution: int, channel_base: int, channel_max: int = 512, **kwargs) -> Architecture:
        """NVlabs' channel rule: ``min(channel_base / res, channel_max)`` (FFHQ 256: base 16384; 1024: 32768)."""
        return cls(resolution, tuple(min(channel_base // 2**k, channel_max)
                                     for k in range(2, int(math.log2(resolution)) + 1)), **kwargs)


class Synthesis(nn.Module):
    def __init__(self, arch: Architecture):
        super().__init__()
        self.resolutions = [2**k for k in range(2, int(math.log2(arch.resolution)) + 1)]
        if len(arch.channels) != len(self.resolutions) or 2 ** int(math.log2(arch.resolution)) != arch.resolution:
            raise ValueError(f"resolution {arch.resolution} needs one channel count per block from 4 px, "
                             f"got {arch.channels}")
        previous = 0
        for res, ch in zip(self.resolutions, arch.channels, strict=True):
            self.add_module(f"b{res}", SynthesisBlock(previous, ch, arch.w_dim, res, arch.img_channels,
                                                      arch.conv_clamp))
            previous = ch
        self.num_ws = 2 * len(self.resolutions)  # 1 + 2 per block after the first + the last toRGB

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.resolutions]

    def noise_layers(self) -> list[SynthesisLayer]:
        return [layer for block in self.blocks() for layer in block.layers()]

    def forward(self, ws: torch.Tensor, noises: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """ws (N, num_ws, w_dim) -> image (N, C, R, R) in about [-1, 1]; ``noises`` one (1, 1, r, r) map per conv
        layer, None: the stored constant noise."""
        layer_noises: list[torch.Tensor | None] = list(noises) if noises is not None else [None] * (self.num_ws - 1)
        x = img = None
        w_idx = 0
        for block in self.blocks():
            block_noises, layer_noises = layer_noises[:block.num_conv], layer_noises[block.num_conv:]
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], block_noises)
            w_idx += block.num_conv
        assert img is not None
        return img


class Generator(nn.Module):
    """``mapping`` + ``synthesis``; named as NVlabs' ``G_ema`` so its state dict loads with ``load_state_dict``."""

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        self.mapping = Mapping(arch.z_dim, arch.w_dim, arch.mapping_layers, arch.mapping_hidden, arch.mapping_lr)
        self.synthesis = Synthesis(arch)
        self.num_ws = self.synthesis.num_ws
        self.w_avg_source = "stored with the weights"  # for the run record: where the truncation centre came from

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def noise_shapes(self) -> list[tuple[int, ...]]:
        return [(1, 1, *layer.noise_const.shape) for layer in self.synthesis.noise_layers()]

    def forward(self, z: torch.Tensor, truncation: float = 1.0, noises: Sequence[torch.Tensor] | None = None
                ) -> torch.Tensor:
        w = self.mapping(z)
        w = self.w_avg + truncation * (w - self.w_avg)
        return self.synthesis(w[:, None].expand(-1, self.num_ws, -1), noises)


def untrained_generator(arch: Architecture, seed: int = 0) -> Generator:
    """A seeded random generator scaled as a trained one draws (images mostly inside [-1, 1], noise strength 0.1,
    ``w_avg`` of 1000 mappings), in eval mode without gradients. It draws coloured blobs, not faces: for tests and for
    showing the mechanics of inversion and editing where no trained weights can be had."""
    torch.manual_seed(seed)
    g = Generator(arch)
    with torch.no_grad():
        for layer in g.synthesis.noise_layers():
            layer.noise_strength.fill_(0.1)
        for block in g.synthesis.blocks():
            block.torgb.weight.mul_(0.25)
        g.mapping.w_avg.copy_(g.mapping(torch.randn(1000, arch.z_dim)).mean(0))
    return g.eval().requires_grad_(False)


@torch.no_grad()
def mapped_samples(g: Generator, samples: int, seed: int) -> torch.Tensor:
    """W (samples, w_dim) of ``samples`` z drawn by numpy's ``RandomState(seed)`` (as the NVlabs projector draws
    them, so the same on every device), mapped on ``g``'s device."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(samples, g.arch.z_dim)).float().to(g.w_avg.device)
    return g.mapping(z)


def compute_w_avg(g: Generator, samples: int = MEAN_W_SAMPLES, seed: int = MEAN_W_SEED) -> Generator:
    """Sets ``g``'s mean W to that of ``samples`` mapped z (a file that has none: truncation needs it, and zeros
    are no face's W) and says so in ``w_avg_source``; returns ``g``."""
    g.mapping.w_avg.copy_(mapped_samples(g, samples, seed).mean(0))
    g.w_avg_source = f"computed at load time: mean of {samples} mapped z (seed {seed}); the file has none"
    return g


def architecture_of(state: MappingType[str, torch.Tensor], conv_clamp: float | None = 256.0,
                    mapping_lr: float = 0.01) -> Architecture:
    """The architecture a ``G_ema``-named state dict describes (what the weights cannot say is passed in)."""
    try:
        torgbs = (re.fullmatch(r"synthesis\.b(\d+)\.torgb\.bias", k) for k in state)
        resolutions = sorted(int(m.group(1)) for m in torgbs if m)
        fcs = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
        if not resolutions or resolutions[0] != 4 or not fcs:
            raise KeyError("synthesis.b4 / mapping.fc0")
        return Architecture(
            resolution=resolutions[-1],
            channels=tuple(state[f"synthesis.b{r}.conv1.weight"].shape[0] for r in resolutions),
            z_dim=state["mapping.fc0.weight"].shape[1], w_dim=state[f"mapping.fc{fcs[-1]}.weight"].shape[0],
            mapping_layers=len(fcs), mapping_hidden=state["mapping.fc0.weight"].shape[0],
            img_channels=state[f"synthesis.b{resolutions[-1]}.torgb.bias"].shape[0],
            conv_clamp=conv_clamp, mapping_lr=mapping_lr)
    except KeyError as err:
        raise BackendUnavailable(f"not a StyleGAN2 generator's weights: {err} is missing", option="generator") from None


def from_state_dict(state: MappingType[str, torch.Tensor], conv_clamp: float | None = 256.0,
                    mapping_lr: float = 0.01) -> Generator:
    """A generator from a ``G_ema``-named state dict (strict: every name must match)."""
    g = Generator(architecture_of(state, conv_clamp, mapping_lr))
    try:
        g.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as err:
        detail = " ".join(line.strip() for line in str(err).splitlines()[1:3])
        raise BackendUnavailable(f"the weights do not fit a StyleGAN2 generator: {detail}",
                                 option="generator") from None
    return g.eval().requires_grad_(False)


def _rosinality_layer(src: str, dst: str, state: MappingType[str, torch.Tensor], out: dict[str, torch.Tensor],
                      noise: torch.Tensor | None) -> None:
    out[f"{dst}.weight"] = state[f"{src}.conv.weight"][0]
    out[f"{dst}.affine.weight"] = state[f"{src}.conv.modulation.weight"]
    out[f"{dst}.affine.bias"] = state[f"{src}.conv.modulation.bias"]
    if noise is not None:  # a conv layer, not a toRGB
        out[f"{dst}.bias"] = state[f"{src}.activate.bias"]
        out[f"{dst}.noise_strength"] = state[f"{src}.noise.weight"].reshape([])
        out[f"{dst}.noise_const"] = noise.reshape(noise.shape[-2:])
        out[f"{dst}.resample_filter"] = fir_filter()
    else:
        out[f"{dst}.bias"] = state[f"{src}.bias"].reshape(-1)


def from_rosinality(state: MappingType[str, torch.Tensor], latent_avg: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """rosinality/stylegan2-pytorch ``g_ema`` names -> NVlabs names. Both ports store the equalized-lr weights
    unscaled and the upsampling conv unflipped for a transposed convolution, so tensors move over unchanged."""
    out: dict[str, torch.Tensor] = {}
    styles = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    for i, s in enumerate(styles):  # style.0 is the pixel norm
        out[f"mapping.fc{i}.weight"], out[f"mapping.fc{i}.bias"] = state[f"style.{s}.weight"], state[f"style.{s}.bias"]
    out["mapping.w_avg"] = (torch.zeros(out[f"mapping.fc{len(styles) - 1}.weight"].shape[0]) if latent_avg is None
                            else latent_avg.reshape(-1))
    out["synthesis.b4.const"] = state["input.input"][0]
    out["synthesis.b4.resample_filter"] = fir_filter()
    _rosinality_layer("conv1", "synthesis.b4.conv1", state, out, state["noises.noise_0"])
    _rosinality_layer("to_rgb1", "synthesis.b4.torgb", state, out, None)
    n_up = len([k for k in state if re.fullmatch(r"to_rgbs\.\d+\.bias", k)])
    for i in range(n_up):
        b = f"synthesis.b{2 ** (i + 3)}"
        out[f"{b}.resample_filter"] = fir_filter()
        _rosinality_layer(f"convs.{2 * i}", f"{b}.conv0", state, out, state[f"noises.noise_{2 * i + 1}"])
        _rosinality_layer(f"convs.{2 * i + 1}", f"{b}.conv1", state, out, state[f"noises.noise_{2 * i + 2}"])
        _rosinality_layer(f"to_rgbs.{i}", f"{b}.torgb", state, out, None)
    return out
