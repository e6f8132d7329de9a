"""Loading StyleGAN2 generator weights without running anything from the file.

An NVlabs stylegan2-ada-pytorch ``.pkl`` is a plain pickle whose networks are rebuilt by
``torch_utils.persistence._reconstruct_persistent_obj``, which execs Python source stored in the file. Here the
pickle is read by an unpickler that resolves only the globals needed for tensors and plain containers; the
reconstructor is replaced by a stub that keeps the object's class name and state, and the generator's parameters
are then taken from that state by name. Any other global is refused, naming it. rosinality ``.pt`` files, and
generators this package saves (``save_generator``: a PTI-tuned one), go through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import io
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optimswap.errors import BackendUnavailable
from optimswap.gan.stylegan2 import Generator, compute_w_avg, from_rosinality, from_state_dict
from optimswap.weights import verified_download

# Official NVlabs stylegan2-ada-pytorch FFHQ generators (README "Pretrained networks" / paper Fig. 7c sweep).
FFHQ_URLS = {
    "ffhq-1024": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
    "ffhq-256": "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/paper-fig7c-training-set-sweeps/"
                "ffhq70k-paper256-ada.pkl",
}


class UnsafeCheckpoint(BackendUnavailable):
    """A checkpoint asks for code to be run (a global outside the allowed ones); nothing from it was run."""


@dataclass
class PersistentState:
    """What ``_reconstruct_persistent_obj`` would have been given, kept as data: the class name and its state."""

    class_name: str
    state: dict = field(default_factory=dict)


def _persistent_stub(meta: Any) -> PersistentState:
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError("persistence metadata is not a dict")
    # module_src is never looked at, let alone executed.
    return PersistentState(str(meta.get("class_name", "?")), meta.get("state") or {})


def _storage_from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), weights_only=True)


def _numpy_scalar() -> Any:
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved the module; numpy 1 has only np.core
    return core.multiarray.scalar


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): lambda: torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): lambda: torch._utils._rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): lambda: _storage_from_bytes,
    ("collections", "OrderedDict"): lambda: OrderedDict,
    ("builtins", "set"): lambda: set,
    ("dnnlib.util", "EasyDict"): lambda: dict,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): lambda: _persistent_stub,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        make = _ALLOWED.get((module, name))
        if make is None:
            raise UnsafeCheckpoint(f"refused: the checkpoint asks for {module}.{name}, which is not a tensor or "
                                   "plain-data constructor (it could run code); nothing from the file was run",
                                   option="generator")
        return make()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpoint("refused: the checkpoint uses pickle persistent ids", option="generator")


def read_nvlabs_pickle(data: bytes) -> Any:
    """The pickle's content with persistent objects as ``PersistentState``; ``UnsafeCheckpoint`` if it asks for
    anything else."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafeCheckpoint:
        raise
    except Exception as err:  # a truncated or malformed file: any of pickle's many error types
        raise BackendUnavailable(f"cannot read the checkpoint as an NVlabs pickle: {err}", option="generator") from None


def _flatten(obj: PersistentState, prefix: str, out: dict[str, torch.Tensor], attrs: dict[str, dict]) -> None:
    state = obj.state
    for group in ("_parameters", "_buffers"):
        for name, tensor in (state.get(group) or {}).items():
            if isinstance(tensor, torch.Tensor):
                out[prefix + name] = tensor.detach()
    attrs[prefix] = {k: v for k, v in state.items() if isinstance(v, (int, float)) or v is None}
    attrs[prefix]["class_name"] = obj.class_name
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentState):
            _flatten(child, f"{prefix}{name}.", out, attrs)


def generator_from_nvlabs(content: Any) -> Generator:
    """The ``G_ema`` network of an NVlabs pickle's content, with its conv clamp and mapping learning rate."""
    if not isinstance(content, dict) or not isinstance(content.get("G_ema"), PersistentState):
        raise BackendUnavailable("the pickle holds no NVlabs G_ema network", option="generator")
    state: dict[str, torch.Tensor] = {}
    attrs: dict[str, dict] = {}
    _flatten(content["G_ema"], "", state, attrs)
    layer = next((a for a in attrs.values() if a["class_name"].endswith("SynthesisLayer")), {})
    return from_state_dict(state, conv_clamp=layer.get("conv_clamp"),
                           mapping_lr=attrs.get("mapping.fc0.", {}).get("bias_gain", 0.01))


def save_generator(path: Path, g: Generator) -> None:
    """``g``'s weights under their NVlabs names, with what the weights cannot say, for ``load_generator``."""
    torch.save({"G_ema": {k: v.detach().cpu() for k, v in g.state_dict().items()}, "conv_clamp": g.arch.conv_clamp,
                "mapping_lr": g.arch.mapping_lr, "w_avg_source": g.w_avg_source}, path)


def generator_from_torch_file(path: Path) -> Generator:
    """A ``save_generator`` file or a rosinality checkpoint."""
    # Training checkpoints carry their argparse options; a Namespace is plain data.
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeCheckpoint(f"refused {path}: {str(err).splitlines()[0]}", option="generator") from None
    if isinstance(content, dict) and isinstance(content.get("G_ema"), dict):
        g = from_state_dict(content["G_ema"], content.get("conv_clamp"), content.get("mapping_lr", 0.01))
        g.w_avg_source = content.get("w_avg_source", g.w_avg_source)
        return g
    state = content.get("g_ema", content) if isinstance(content, dict) else None
    if not isinstance(state, dict) or "input.input" not in state:
        raise BackendUnavailable(f"{path} is not a rosinality StyleGAN2 checkpoint (no g_ema / input.input)",
                                 option="generator")
    # rosinality has no conv clamp. Its training checkpoints carry latent_avg; a bare g_ema state does not, and
    # rosinality's own scripts then average mapped samples for truncation (mean_latent): so do we.
    latent_avg = content.get("latent_avg")
    g = from_state_dict(from_rosinality(state, latent_avg), conv_clamp=None)
    return compute_w_avg(g) if latent_avg is None else g


def resolve_generator_path(source: str | Path) -> Path:
    """A local path, a URL (fetched into the torch hub cache) or a name from ``FFHQ_URLS``."""
    text = str(source)
    if text in FFHQ_URLS:
        text = FFHQ_URLS[text]
    if re.match(r"https?://", text):
        url, _, pin = text.partition("#sha256=")  # without a pin, the digest at download is the expectation
        return verified_download(url, "generator", "download it by hand and pass --generator PATH", pin or None)
    path = Path(text).expanduser()
    if not path.is_file():
        raise BackendUnavailable(f"generator weights {path} not found; get the official FFHQ ones from "
                                 f"{FFHQ_URLS['ffhq-256']} (256 px) or {FFHQ_URLS['ffhq-1024']} (1024 px), or pass "
                                 "the URL or the name ffhq-256 / ffhq-1024", option="generator")
    return path


def load_generator(source: str | Path, device: str | torch.device = "cpu") -> Generator:
    """A StyleGAN2 generator from an NVlabs ``.pkl``, a rosinality ``.pt`` or a ``save_generator`` file, in eval mode
    without gradients."""
    path = resolve_generator_path(source)
    data = path.read_bytes()
    # A torch.save file is a zip archive; an NVlabs network is a bare pickle.
    try:
        g = generator_from_torch_file(path) if data[:2] == b"PK" else generator_from_nvlabs(read_nvlabs_pickle(data))
    except BackendUnavailable as err:  # the reason, with the file it is about
        raise type(err)(f"{path}: {err}", option="generator") from None
    return g.to(device)
