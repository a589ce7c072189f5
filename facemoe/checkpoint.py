"""Official FaceMoE checkpoints: the released files, find (local path or Hugging Face Hub), read, the one
checkpoint filter (official format -> the model's state dict, strict, readable diff), load, save.

The released ``model.pt`` files are plain state dicts with the official key names, buffers included
(``attn_mask``, ``relative_position_index``, BatchNorm statistics). The architecture is inferred from
the keys and shapes; the router's top-k is not stored in a checkpoint and comes from the caller.
:data:`RELEASES` is the one table of released files: the timm pretrained cfgs of :mod:`facemoe.registry` are
derived from it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import torch
from torch import nn

from .blocks import SwinBlock, WindowAttention, relative_position_index, shift_attention_mask
from .errors import CheckpointError
from .model import FaceMoE, FaceMoEConfig

__all__ = [
    "HUB_REPO",
    "RELEASES",
    "Release",
    "checkpoint_filter_fn",
    "file_tag",
    "hub_download",
    "hub_unreachable",
    "infer_config",
    "load_model",
    "load_pretrained",
    "read_state_dict",
    "resolve_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Release:
    """A released checkpoint: the timm variant it fits, where it lives on the Hugging Face Hub, what it is."""

    architecture: str
    hub_id: str
    filename: str
    description: str

    @property
    def location(self) -> str:
        return f"{self.hub_id}/{self.filename}"


HUB_REPO = "kartiknarayan/FaceMoE"
RELEASES = {  # the first one is the default weights of its variant
    "briar": Release(
        "facemoe_swin_e3k2",
        HUB_REPO,
        "swin4m_exp_3_k_2_briar_full/model.pt",
        "FaceMoE Swin-MoE, 3 experts, top-2, the BRIAR release",
    ),
    "tinyface": Release(
        "facemoe_swin_e3k2",
        HUB_REPO,
        "swin4m_exp_3_k_2_tinyface_full/model.pt",
        "FaceMoE Swin-MoE, 3 experts, top-2, the TinyFace release",
    ),
}
_CONTAINER_KEYS = ("state_dict_backbone", "state_dict", "model", "backbone")
_PREFIXES = ("module.", "_orig_mod.", "backbone.")
_DERIVED_BUFFERS = ("attn_mask", "relative_position_index")
_DIFF_ITEMS = 6
HUB_PROBE_S = 3.0  # seconds to open a connection to the Hub before taking the machine for offline


def resolve_checkpoint(source: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local ``model.pt`` path, a release name (``briar``, ``tinyface``) or ``hf://owner/repo/path/model.pt``.

    Hub files are downloaded once into the Hugging Face cache (``cache_dir`` or ``$HF_HOME``) and reused.
    """
    text = str(source)
    if text in RELEASES:
        return hub_download(RELEASES[text].hub_id, RELEASES[text].filename, cache_dir)
    if text.startswith("hf://"):
        parts = text[len("hf://") :].split("/")
        if len(parts) < 3:
            raise CheckpointError(f"expected hf://owner/repo/path/to/model.pt, got {text!r}")
        return hub_download("/".join(parts[:2]), "/".join(parts[2:]), cache_dir)
    path = Path(text).expanduser()
    if not path.is_file():
        names = ", ".join(sorted(RELEASES))
        raise CheckpointError(
            f"checkpoint not found: {path} (expected a model.pt file or a release name: {names})"
        )
    return path


def hub_download(repo_id: str, filename: str, cache_dir=None, how_to_pass: str = "the local path") -> Path:
    """The Hub file, from the cache or downloaded into it; else one line saying which file to put where.

    Where the Hub cannot be reached (:func:`hub_unreachable`: ``HF_HUB_OFFLINE``, or no connection to
    ``HF_ENDPOINT`` within :data:`HUB_PROBE_S`) only the cache is looked at, so an offline machine gets its answer
    in seconds instead of after the client's retries; the client's retry warnings are kept off the console."""
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise CheckpointError("huggingface_hub is not installed: pip install huggingface_hub") from exc
    where = cache_dir or constants.HF_HUB_CACHE
    offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else hub_unreachable(constants.ENDPOINT)
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # "Retrying in 1s [Retry 1/5]": the failure below says it once
    try:
        return Path(
            hf_hub_download(
                repo_id=repo_id,
                filename=filename,
                cache_dir=cache_dir,
                etag_timeout=10,
                local_files_only=bool(offline),
            )
        )
    except Exception as exc:  # offline, repo moved, no permission: all end the same way for the user
        reason = f"offline: {offline}" if offline else type(exc).__name__
        raise CheckpointError(
            f"cannot fetch {repo_id}/{filename} from the Hugging Face Hub ({reason}); download it where the Hub is "
            f"reachable and pass {how_to_pass}, or pre-fill the Hub cache at {where}"
        ) from None
    finally:
        hub_log.setLevel(level)


def hub_unreachable(endpoint: str, timeout: float | None = None) -> str | None:
    """Why the Hub at ``endpoint`` (a URL) cannot be reached, or None when a TCP connection to it opens within
    ``timeout`` seconds (:data:`HUB_PROBE_S`; the name lookup included)."""
    timeout = HUB_PROBE_S if timeout is None else timeout
    parts = urlsplit(endpoint)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return f"no host in {endpoint!r}"
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"no connection to {host}:{port}: {exc.strerror or exc}")

    thread = threading.Thread(
        target=probe, name="hub-probe", daemon=True
    )  # a stuck name lookup is left behind
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no connection to {host}:{port} within {timeout:g} s"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file (tensors only, memory-mapped) and return the filtered state dict."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, expected a PyTorch checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as first:
        try:  # legacy (non-zip) files cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            reason = str(first).splitlines()[0][:160] if str(first) else type(first).__name__
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {reason}"
            ) from None
    return checkpoint_filter_fn(obj, source=str(path))


def checkpoint_filter_fn(
    state_dict, model: nn.Module | None = None, source: str | None = None
) -> dict[str, torch.Tensor]:
    """The one checkpoint filter, for :func:`load_model` and timm's pretrained loading alike.

    Unwraps training containers (``state_dict_backbone``...) and DDP/compile prefixes. Given the ``model`` (as
    timm's ``pretrained_filter_fn``), it also fits the state to it strictly: a missing, unexpected or misshapen
    key is a :class:`CheckpointError` listing the differences; the constant buffers a non-official save omits
    are recomputed; floating tensors take the model's dtypes. The result loads with ``strict=True``.
    """
    source = source or _describe(model)
    obj = state_dict
    if isinstance(obj, dict):
        for key in _CONTAINER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{source}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not torch.is_tensor(value):
            raise CheckpointError(f"{source}: expected tensors only, got {type(value).__name__} at {key!r}")
        for prefix in _PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    if model is None:
        return state
    model_state = model.state_dict()
    problems = _diff(model_state, state)
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))
    state = {key: _like(value, model_state[key]) for key, value in state.items()}
    return {**_derived_buffers(model, exclude=state), **state}


def _describe(model: nn.Module | None) -> str:
    """Where timm's pretrained loading took the weights from (its cfg), for messages."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    hub = "/".join(str(cfg[k]) for k in ("hf_hub_id", "hf_hub_filename") if cfg.get(k))
    return str(cfg.get("file") or hub or "checkpoint")


def _like(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if value.is_floating_point() and target.is_floating_point() and value.dtype != target.dtype:
        return value.to(target.dtype)
    return value


def infer_config(state: dict[str, torch.Tensor], k: int = 2, **overrides) -> FaceMoEConfig:
    """Architecture from keys and shapes: dims, depths, heads, window, experts (``k`` is not stored)."""
    stem = state.get("patch_embed.proj.weight")
    if stem is None or stem.ndim != 4 or "absolute_pos_embed" not in state:
        sample = ", ".join(list(state)[:4])
        raise CheckpointError(
            f"not a FaceMoE checkpoint: expected 'patch_embed.proj.weight' and "
            f"'absolute_pos_embed', got keys like {sample}"
        )
    embed_dim, in_chans, patch = stem.shape[0], stem.shape[1], stem.shape[2]
    grid = math.isqrt(state["absolute_pos_embed"].shape[1])
    blocks: dict[int, set[int]] = {}
    for key in state:
        m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.", key)
        if m:
            blocks.setdefault(int(m[1]), set()).add(int(m[2]))
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise CheckpointError(
            f"not a FaceMoE checkpoint: expected layers.0.blocks.0... keys, got stages {sorted(blocks)}"
        )
    depths = tuple(len(blocks[i]) for i in range(len(blocks)))
    try:
        heads = tuple(
            state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1]
            for i in range(len(depths))
        )
        window = (math.isqrt(state["layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]) + 1) // 2
        gate = state.get("layers.0.blocks.0.mlp.router.gate.weight")
        fc1 = state[
            "layers.0.blocks.0.mlp.experts.0.fc1.weight"
            if gate is not None
            else "layers.0.blocks.0.mlp.fc1.weight"
        ]
        num_features = state["feature_layer.2.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not a FaceMoE checkpoint: missing {exc.args[0]!r}") from None
    num_experts = gate.shape[0] if gate is not None else overrides.get("num_experts", 3)
    if "num_experts" in overrides and gate is not None and overrides["num_experts"] != num_experts:
        raise CheckpointError(
            f"expected a checkpoint with {overrides['num_experts']} experts, got one with {num_experts}"
        )
    if gate is not None and not 1 <= k <= num_experts:
        raise CheckpointError(
            f"top-k={k} does not fit a checkpoint with {num_experts} experts (need 1 <= k <= {num_experts})"
        )
    kwargs = dict(
        img_size=grid * patch,
        patch_size=patch,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=window,
        mlp_ratio=fc1.shape[0] / embed_dim,
        num_features=num_features,
        use_moe=gate is not None,
        num_experts=num_experts,
        k=k,
    )
    kwargs.update({key: value for key, value in overrides.items() if key != "num_experts"})
    try:
        return FaceMoEConfig(**kwargs)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint architecture is not buildable: {exc}") from None


def _diff(model_state: dict, state: dict) -> list[str]:
    """Human-readable differences between what the model expects and what the checkpoint holds."""
    missing = [k for k in model_state if k not in state and not k.endswith(_DERIVED_BUFFERS)]
    unexpected = [k for k in state if k not in model_state]
    shapes = [
        f"{k}: expected {list(model_state[k].shape)}, got {list(state[k].shape)}"
        for k in model_state
        if k in state and model_state[k].shape != state[k].shape
    ]
    lines = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - _DIFF_ITEMS} more)" if len(items) > _DIFF_ITEMS else ""
            lines.append(f"{len(items)} {title}: " + ", ".join(items[:_DIFF_ITEMS]) + more)
    return lines


def load_pretrained(model: FaceMoE, source: str | os.PathLike, cache_dir=None) -> FaceMoE:
    """Load an official checkpoint into an existing model, strictly, with a readable diff on mismatch."""
    path = resolve_checkpoint(source, cache_dir)
    model.load_state_dict(checkpoint_filter_fn(read_state_dict(path), model, source=str(path)), strict=True)
    model.checkpoint_tag = file_tag(path)
    return model


def _derived_buffers(model: FaceMoE, exclude: dict) -> dict[str, torch.Tensor]:
    """Recompute the constant buffers (relative index, shift mask) that a non-official save may omit."""
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, WindowAttention) and f"{name}.relative_position_index" not in exclude:
            out[f"{name}.relative_position_index"] = relative_position_index(module.window_size)
        if isinstance(module, SwinBlock) and module.shift_size and f"{name}.attn_mask" not in exclude:
            out[f"{name}.attn_mask"] = shift_attention_mask(
                module.resolution, module.window_size, module.shift_size
            )
    return out


def load_model(
    source: str | os.PathLike,
    k: int = 2,
    device: str | torch.device = "cpu",
    cache_dir=None,
    **overrides,
) -> FaceMoE:
    """Build the model a checkpoint describes and load it strictly; returns it in eval mode on ``device``.

    ``overrides`` are :class:`FaceMoEConfig` fields the file cannot tell (``drop_path_rate``...) or that must
    agree with it (``num_experts``).
    """
    path = resolve_checkpoint(source, cache_dir)
    state = read_state_dict(path)
    cfg = infer_config(state, k=k, **overrides)
    with torch.device("meta"):
        model = FaceMoE(cfg)
    model.load_state_dict(checkpoint_filter_fn(state, model, source=str(path)), strict=True, assign=True)
    model.checkpoint_tag = file_tag(path)
    logger.info("loaded %s (%d tensors, %d experts, top-%d)", path, len(state), cfg.num_experts, cfg.k)
    return model.to(device).eval()


def save_checkpoint(model: FaceMoE, path: str | os.PathLike) -> Path:
    """Write a plain official-format state dict (buffers included) atomically; the official code loads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    tmp = path.with_name(path.name + ".partial")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def file_tag(path: str | os.PathLike) -> str:
    """A short stable tag of a checkpoint file: size + hash of its first and last MiB (cheap for 1.8 GB)."""
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(-(1 << 20), os.SEEK_END)
            digest.update(fh.read(1 << 20))
    return digest.hexdigest()[:12]
