"""timm registration of FaceMoE: the model variants and the pretrained cfgs of the released checkpoints.

    import facemoe.registry  # registers facemoe_swin_e3k2 (tags .briar, .tinyface) and facemoe_swin_dense
    model = timm.create_model("facemoe_swin_e3k2.tinyface", pretrained=True)

One pretrained cfg per release, derived from :data:`facemoe.checkpoint.RELEASES` (Hub id, file name,
description) and the evaluation preprocessing of :mod:`facemoe.preprocess` (3x120x120, mean = std = 0.5,
bicubic). ``facemoe_swin_e3k2`` without a tag is its first release (``briar``).

Pretrained weights come through :mod:`facemoe.checkpoint`: the cfg's ``file`` (e.g.
``pretrained_cfg_overlay=dict(file=PATH)``; a release name or ``hf://`` also works) or else its Hub file (from the
Hugging Face cache, downloaded there once). The file is read once (memory-mapped) and handed to timm's builder as
the cfg's ``state_dict``; timm applies the one checkpoint filter
(:func:`facemoe.checkpoint.checkpoint_filter_fn`: official keys, readable diff on mismatch) and loads strictly.
Offline without the file in the cache: a one-line :class:`~facemoe.errors.CheckpointError` naming the file and
where to put it. The loaded model's ``pretrained_cfg['file']`` is the file read, its ``checkpoint_tag`` the
file's tag (as for :func:`facemoe.checkpoint.load_model`).
"""

from __future__ import annotations

import dataclasses

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model, resolve_pretrained_cfg

from .checkpoint import (
    RELEASES,
    checkpoint_filter_fn,
    file_tag,
    hub_download,
    read_state_dict,
    resolve_checkpoint,
)
from .errors import CheckpointError
from .model import FaceMoE, create_facemoe
from .preprocess import INPUT_SIZE, MEAN, STD

__all__ = ["default_cfgs"]  # register_model adds the entrypoints


def _cfg(**kwargs) -> dict:
    return {
        "input_size": (3, INPUT_SIZE, INPUT_SIZE),
        "fixed_input_size": True,  # absolute position embedding: one input size
        "interpolation": "bicubic",
        "crop_pct": 1.0,  # aligned crops are resized, not cropped
        "mean": (MEAN,) * 3,
        "std": (STD,) * 3,
        "num_classes": 0,  # an embedder: num_features (512) outputs, no classifier
        "first_conv": "patch_embed.proj",
        "paper_name": "FaceMoE",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        **{
            f"{release.architecture}.{tag}": _cfg(
                hf_hub_id=release.hub_id,
                hf_hub_filename=release.filename,
                description=release.description,
                origin_url=f"https://huggingface.co/{release.hub_id}",
            )
            for tag, release in RELEASES.items()
        },
        "facemoe_swin_dense": _cfg(
            description="the FaceMoE Swin backbone with dense MLPs; no released weights"
        ),
    }
)


def _build(num_classes: int = 0, img_size: int | tuple[int, int] = INPUT_SIZE, **kwargs) -> FaceMoE:
    """timm's model constructor: :func:`create_facemoe` with timm's ``num_classes`` and ``(H, W)`` sizes."""
    if num_classes:
        raise ValueError(
            f"FaceMoE is an embedder without a classifier: expected num_classes=0, got {num_classes}"
        )
    if not isinstance(img_size, int):
        if len(img_size) != 2 or img_size[0] != img_size[1]:
            raise ValueError(f"img_size: expected a square input, got {tuple(img_size)}")
        img_size = int(img_size[0])
    return create_facemoe(img_size=img_size, **kwargs)


def _with_weights(variant: str, pretrained_cfg, overlay: dict | None, cache_dir) -> tuple[object, str | None]:
    """The resolved pretrained cfg with its weights read into ``state_dict``, and the file's tag."""
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay)
    if cfg.state_dict is not None:
        return cfg, None
    if cfg.file:
        path = resolve_checkpoint(cfg.file, cache_dir)
    elif cfg.hf_hub_id and cfg.hf_hub_filename:
        path = hub_download(
            cfg.hf_hub_id,
            cfg.hf_hub_filename,
            cache_dir,
            how_to_pass="its local path as pretrained_cfg_overlay=dict(file=PATH)",
        )
    else:
        raise CheckpointError(
            f"no released weights exist for {variant}: pass a model.pt as "
            f"pretrained_cfg_overlay=dict(file=PATH)"
        )
    return dataclasses.replace(cfg, state_dict=read_state_dict(path), file=str(path)), file_tag(path)


def _create(variant: str, pretrained: bool = False, **kwargs) -> FaceMoE:
    tag = None
    if pretrained:
        kwargs["pretrained_cfg"], tag = _with_weights(
            variant,
            kwargs.pop("pretrained_cfg", None),
            kwargs.pop("pretrained_cfg_overlay", None),
            kwargs.get("cache_dir"),
        )
    model = build_model_with_cfg(
        _build, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs
    )
    model.pretrained_cfg.pop(
        "state_dict", None
    )  # the weights are in the model now: do not hold a second copy
    model.checkpoint_tag = tag
    return model


@register_model
def facemoe_swin_e3k2(pretrained: bool = False, **kwargs) -> FaceMoE:
    """The paper model: img 120, patch 6, dim 384, depths 2/18/2, heads 8/16/16, window 5, 3 experts, top-2."""
    return _create("facemoe_swin_e3k2", pretrained, **{"num_experts": 3, "k": 2, **kwargs})


@register_model
def facemoe_swin_dense(pretrained: bool = False, **kwargs) -> FaceMoE:
    """The same Swin backbone with dense MLPs (``use_moe=False``); no released weights (a ``file`` loads)."""
    return _create("facemoe_swin_dense", pretrained, **{"use_moe": False, **kwargs})
