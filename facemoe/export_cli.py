"""The ``export`` command: a FaceMoE checkpoint to ONNX (dynamic batch, top-k routing in the graph), checked
against torch with onnxruntime before it is kept.

    run_pipeline.py export CHECKPOINT OUT.onnx [--k 2] [--batch N] [--opset 17] [--no-check]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import FaceMoEError

__all__ = ["register", "run_export"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a FaceMoE checkpoint to ONNX (onnxruntime, TensorRT, Triton)",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "checkpoint", help="model.pt path, a release name (briar, tinyface) or hf://owner/repo/path"
    )
    p.add_argument("out", type=Path, help="the .onnx file to write")
    p.add_argument("--k", type=int, default=2, help="experts per token (the checkpoint's top-k, default 2)")
    p.add_argument("--batch", type=int, help="a fixed batch size (default: dynamic)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 16, default 17)")
    p.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip the onnxruntime-against-torch check (batches 1, 3 and 8, within 1e-4)",
    )
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    if args.out.suffix != ".onnx":
        raise FaceMoEError(f"output: expected a .onnx file name, got {args.out}")
    if args.out.exists() and not args.out.is_file():
        raise FaceMoEError(f"output: expected a file path, got a folder {args.out}")
    from .checkpoint import load_model
    from .export import check_onnx, export_onnx, onnx_session

    model = load_model(args.checkpoint, k=args.k)
    partial = args.out.with_name(args.out.name + ".partial")
    try:
        export_onnx(model, partial, opset=args.opset, batch=args.batch)
        if args.check:
            batches = (args.batch,) if args.batch else (1, 3, 8)
            worst = check_onnx(model, onnx_session(partial), batch_sizes=batches)
            print(
                f"onnxruntime agrees with torch at batch {', '.join(map(str, batches))}: max abs diff "
                f"{worst:.2g}",
                file=sys.stderr,
            )
        os.replace(partial, args.out)  # a failed export or check leaves no file behind
    finally:
        partial.unlink(missing_ok=True)
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB, batch {args.batch or 'dynamic'})",
        file=sys.stderr,
    )
    return 0
