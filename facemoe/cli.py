"""The ``train`` and ``eval`` commands: YAML configs (validated, ``--set`` overrides), one-line errors."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from .errors import FaceMoEError

__all__ = ["PROTOCOLS", "ConfigError", "load_config", "register"]

logger = logging.getLogger(__name__)

PROTOCOLS = ("verification", "tinyface", "ijbs", "briar", "video")
# ``eval video`` runs the video pipeline, whose configuration this is by default (as for ``process``).
PIPELINE_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


class ConfigError(FaceMoEError):
    """A config file or override that is missing, not YAML, or does not fit the schema."""


def _set(tree: dict, dotted: str) -> None:
    key, sep, raw = dotted.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects key=value (dotted key), got {dotted!r}")
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: expected {part} to be a section, got a value")
    node[leaf] = yaml.safe_load(raw)


def load_config(path: str | Path | None, schema: type[BaseModel], overrides: list[str] | None = None) -> BaseModel:
    """Read YAML (or start empty), apply ``key.sub=value`` overrides, validate against ``schema``."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: expected YAML, got a parse error: {str(exc).splitlines()[0]}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(tree).__name__}")
    for item in overrides or []:
        _set(tree, item)
    try:
        return schema.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path or 'config'}: {where}: {err['msg']}{more}") from None


def _train(args: argparse.Namespace) -> int:
    from .train.config import TrainConfig
    from .train.trainer import train

    cfg = load_config(args.config, TrainConfig, args.set)
    result = train(cfg)
    if result.losses:
        print(f"step {result.step}/{result.total_steps}  last loss {result.losses[-1]:.4f}  "
              f"{result.images_per_second:.1f} images/s")
    for path in result.files:
        print(f"wrote {path}")
    return 0


class _LazyEmbedder:
    """Loads the FaceMoE checkpoint on the first ``embed`` call, so bad protocol files fail before a 1.8 GB load."""

    def __init__(self, cfg, section):
        self.cfg, self.section, self.embedder = cfg, section, None

    def embed(self, crops):
        if self.embedder is None:
            from .embedder import FaceMoEEmbedder

            e, s = self.cfg.embedder, self.section
            self.embedder = FaceMoEEmbedder.from_checkpoint(e.checkpoint, k=e.k, device=e.device,
                                                            batch_size=e.batch_size, precision=e.precision,
                                                            flip=s.flip, resize=s.resize)
        return self.embedder.embed(crops)


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import protocols
    from .evaluate.config import EvalConfig
    from .evaluate.report import format_table, write_report

    overrides = list(args.set or [])
    if args.checkpoint:
        overrides.append(f"embedder.checkpoint={args.checkpoint}")
    cfg = load_config(args.config, EvalConfig, overrides)
    section = getattr(cfg, args.protocol)
    embedder = _LazyEmbedder(cfg, section)
    if args.protocol == "verification":
        result = protocols.evaluate_verification(embedder, args.bin, section.folds, section.far_targets)
    elif args.protocol == "tinyface":
        result = protocols.evaluate_tinyface(embedder, args.list, args.root, section.ranks)
    elif args.protocol == "ijbs":
        result = protocols.evaluate_ijbs(embedder, args.probes, args.gallery, args.root, section.fusion,
                                         section.ranks, section.fpir_targets)
    else:
        if len(args.gallery) != 1:
            raise ConfigError(f"briar expects one --gallery file, got {len(args.gallery)}")
        result = protocols.evaluate_briar(embedder, args.probes, args.gallery[0], args.root, section.fusion,
                                          section.far_targets, section.ranks)
    print(json.dumps(result.to_dict(), indent=2) if args.format == "json" else format_table(result))
    if args.out:
        for path in write_report(result, args.out):
            logger.info("wrote %s", path)
    return 0


def _eval_video(args: argparse.Namespace) -> int:
    from pipeline.eval_video import evaluate_videos  # the command runs the video pipeline

    from .evaluate.report import format_table, write_report
    from .evaluate.video import format_tracks

    result = evaluate_videos(args.videos, args.ground_truth, args.gallery, args.config, args.set or [])
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_table(result))
        print()
        print(format_tracks(result))
    if args.out:
        for path in write_report(result, args.out):
            logger.info("wrote %s", path)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="fine-tune FaceMoE (CosFace + router losses); torchrun for DDP")
    p.add_argument("--config", required=True, help="training YAML (see configs/train*.yaml)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config key (dotted path)")
    p.set_defaults(func=_train)

    e = subparsers.add_parser("eval", help="score a FaceMoE checkpoint on a verification / identification protocol")
    sub = e.add_subparsers(dest="protocol", metavar="PROTOCOL", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="evaluation YAML (default: built-in settings, see configs/eval.yaml)")
    common.add_argument("--checkpoint", help="model.pt path or release name (overrides embedder.checkpoint)")
    common.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config key (dotted path)")
    common.add_argument("--out", help="folder for <protocol>.json and the ROC / CMC plot")
    common.add_argument("--format", choices=("table", "json"), default="table", help="what to print")
    v = sub.add_parser("verification", parents=[common], help="pairs of an insightface .bin set (LFW, CFP-FP, AgeDB)")
    v.add_argument("--bin", required=True, help="the .bin pair set")
    t = sub.add_parser("tinyface", parents=[common], help="closed-set identification from an image list CSV")
    t.add_argument("--list", required=True, help="CSV with columns image, subject, set (probe|gallery|distractor)")
    t.add_argument("--root", help="folder the image paths are relative to (default: the list's folder)")
    for name, what in (("ijbs", "set-to-set identification per gallery split"),
                       ("briar", "template verification and identification")):
        s = sub.add_parser(name, parents=[common], help=what)
        s.add_argument("--probes", required=True, help="CSV with TEMPLATE_ID, SUBJECT_ID, FILENAME")
        s.add_argument("--gallery", required=True, action="append",
                       help="gallery CSV (same columns)" + ("; repeat for each split" if name == "ijbs" else ""))
        s.add_argument("--root", help="folder the image paths are relative to (default: each CSV's folder)")
    vid = sub.add_parser("video", help="end to end from raw videos: pipeline tracks scored against who is on "
                         "screen when (track-level rank-k, TPIR@FPIR)")
    vid.add_argument("videos", nargs="+", metavar="VIDEO", help="video files (matched to the ground truth by name)")
    vid.add_argument("--ground-truth", required=True, metavar="CSV",
                     help="CSV with columns video, identity, start_s, end_s (empty times: the whole video)")
    vid.add_argument("--gallery", required=True, metavar="DIR",
                     help="folder of known people: one subfolder per person, or images named after them")
    vid.add_argument("--config", default=str(PIPELINE_CONFIG),
                     help="pipeline YAML, as for process (default: %(default)s)")
    vid.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override one pipeline config key (dotted path), e.g. source.stride=2")
    vid.add_argument("--out", help="folder for video.json")
    vid.add_argument("--format", choices=("table", "json"), default="table",
                     help="what to print: the metrics and one line per track, or all of it as JSON")
    vid.set_defaults(func=_eval_video)
    e.set_defaults(func=_eval)
