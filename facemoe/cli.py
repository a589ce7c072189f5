"""The ``train`` and ``eval`` commands: YAML configs through :func:`core.config.load` (validated, ``--set``
overrides), one-line errors (:class:`core.errors.ConfigError`, :class:`facemoe.errors.FaceMoEError`).

``eval`` scores images (:data:`PROTOCOLS`); :func:`register` returns its protocol sub-parsers so that the
application can add protocols of its own (``eval video`` runs the video pipeline, which this package does not
know).
"""

from __future__ import annotations

import argparse
import json
import logging

from core.config import load

from .errors import FaceMoEError

__all__ = ["PROTOCOLS", "register"]

logger = logging.getLogger(__name__)

PROTOCOLS = ("verification", "tinyface", "ijbs", "briar")


def _train(args: argparse.Namespace) -> int:
    from .train.config import TrainConfig  # the training package imports torch: loaded when the command runs
    from .train.trainer import train

    cfg = load(args.config, TrainConfig, args.set or [])
    result = train(cfg)
    if result.losses:
        print(
            f"step {result.step}/{result.total_steps}  last loss {result.losses[-1]:.4f}  "
            f"{result.images_per_second:.1f} images/s"
        )
    for path in result.files:
        print(f"wrote {path}")
    return 0


class _LazyEmbedder:
    """Loads the FaceMoE checkpoint on the first ``embed`` call, so bad protocol files fail before a 1.8 GB load."""

    def __init__(self, cfg, section):
        self.cfg, self.section, self.embedder = cfg, section, None

    def embed(self, crops):
        if self.embedder is None:
            from .embedder import FaceMoEEmbedder  # torch, when the first crops come

            e, s = self.cfg.embedder, self.section
            self.embedder = FaceMoEEmbedder.from_checkpoint(
                e.checkpoint,
                k=e.k,
                device=e.device,
                batch_size=e.batch_size,
                precision=e.precision,
                flip=s.flip,
                resize=s.resize,
            )
        return self.embedder.embed(crops)


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import protocols  # numpy, OpenCV: loaded when the command runs
    from .evaluate.config import EvalConfig
    from .evaluate.report import format_table, write_report

    overrides = list(args.set or [])
    if args.checkpoint:
        overrides.append(f"embedder.checkpoint={args.checkpoint}")
    cfg = load(args.config, EvalConfig, overrides)
    section = getattr(cfg, args.protocol)
    embedder = _LazyEmbedder(cfg, section)
    if args.protocol == "verification":
        result = protocols.evaluate_verification(embedder, args.bin, section.folds, section.far_targets)
    elif args.protocol == "tinyface":
        result = protocols.evaluate_tinyface(embedder, args.list, args.root, section.ranks)
    elif args.protocol == "ijbs":
        result = protocols.evaluate_ijbs(
            embedder,
            args.probes,
            args.gallery,
            args.root,
            section.fusion,
            section.ranks,
            section.fpir_targets,
        )
    else:
        if len(args.gallery) != 1:
            raise FaceMoEError(f"briar expects one --gallery file, got {len(args.gallery)}")
        result = protocols.evaluate_briar(
            embedder,
            args.probes,
            args.gallery[0],
            args.root,
            section.fusion,
            section.far_targets,
            section.ranks,
        )
    print(json.dumps(result.to_dict(), indent=2) if args.format == "json" else format_table(result))
    if args.out:
        for path in write_report(result, args.out):
            logger.info("wrote %s", path)
    return 0


def register(subparsers) -> argparse._SubParsersAction:
    """Add ``train`` and ``eval`` to the command line's sub-parsers; returns the ``eval`` protocol sub-parsers."""
    p = subparsers.add_parser("train", help="fine-tune FaceMoE (CosFace + router losses); torchrun for DDP")
    p.add_argument("--config", required=True, help="training YAML (see configs/train*.yaml)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override one config key (dotted path)"
    )
    p.set_defaults(func=_train)

    e = subparsers.add_parser(
        "eval", help="score a FaceMoE checkpoint on a verification / identification protocol"
    )
    sub = e.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", help="evaluation YAML (default: built-in settings, see configs/eval.yaml)"
    )
    common.add_argument("--checkpoint", help="model.pt path or release name (overrides embedder.checkpoint)")
    common.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override one config key (dotted path)"
    )
    common.add_argument("--out", help="folder for <protocol>.json and the ROC / CMC plot")
    common.add_argument("--format", choices=("table", "json"), default="table", help="what to print")
    v = sub.add_parser(
        "verification", parents=[common], help="pairs of an insightface .bin set (LFW, CFP-FP, AgeDB)"
    )
    v.add_argument("--bin", required=True, help="the .bin pair set")
    t = sub.add_parser("tinyface", parents=[common], help="closed-set identification from an image list CSV")
    t.add_argument(
        "--list", required=True, help="CSV with columns image, subject, set (probe|gallery|distractor)"
    )
    t.add_argument("--root", help="folder the image paths are relative to (default: the list's folder)")
    for name, what in (
        ("ijbs", "set-to-set identification per gallery split"),
        ("briar", "template verification and identification"),
    ):
        s = sub.add_parser(name, parents=[common], help=what)
        s.add_argument("--probes", required=True, help="CSV with TEMPLATE_ID, SUBJECT_ID, FILENAME")
        s.add_argument(
            "--gallery",
            required=True,
            action="append",
            help="gallery CSV (same columns)" + ("; repeat for each split" if name == "ijbs" else ""),
        )
        s.add_argument("--root", help="folder the image paths are relative to (default: each CSV's folder)")
    e.set_defaults(func=_eval)
    return sub
