"""The ``xai-widgets`` command line.

``xai-widgets camanim --model shapes-resnet --image cat.png --out film.mp4`` computes a CAM at every layer
of a zoo model (or of a torchvision classifier whose pretrained weights are already in the local torch hub
cache; nothing is downloaded) and writes the film as MP4, GIF or a PNG contact sheet; ``--road`` also scores
every layer with ybROAD and names the most faithful one. ``xai-widgets app --model shapes-resnet`` serves the
workbench through Voila on localhost (the workshop app: no code cells; models and pictures chosen in the page).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch

from xai_widgets_launch import AppError, add_app_parser, serve

from .errors import XAIError


def torchvision_weights_path(name: str) -> Path:
    """Where torch hub caches the default pretrained weights of torchvision model ``name``."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def load_model(name: str, device: str | None = None, input_size: int | None = None):
    """A ModelAdapter for a zoo model name (at its training size), or a torchvision classifier name whose
    pretrained weights are in the local torch hub cache, at ``input_size`` (default 224); XAIError otherwise,
    saying where the weights were looked for."""
    import torchvision

    from . import zoo

    if name in zoo.names():
        return zoo.load(name, device=device)
    classifiers = torchvision.models.list_models(module=torchvision.models)
    if name not in classifiers:
        raise XAIError(
            f"unknown model {name!r}: give a zoo model ({', '.join(zoo.names())}) or a torchvision "
            "classifier name such as resnet18 or vgg16"
        )
    path = torchvision_weights_path(name)
    if not path.is_file():
        raise XAIError(
            f"the pretrained weights of {name} are not in the local torch hub cache (looked for {path}); "
            f"nothing is downloaded: fetch them once where there is internet (torchvision.models.{name}"
            "(weights='DEFAULT')) and copy the file there, or use a zoo model"
        )
    from .images import torchvision_adapter

    state = torch.load(path, map_location="cpu", weights_only=True)
    model = torchvision.models.get_model(name)
    model.load_state_dict(state)
    model = model.eval().to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return torchvision_adapter(model, name=name, size=input_size or 224)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xai-widgets", description="Explain PyTorch vision models.")
    commands = parser.add_subparsers(dest="command", required=True)
    film = commands.add_parser(
        "camanim",
        help="a CAM at every layer, exported as a film",
        description="Compute a CAM at every layer with a spatial output and export it as MP4, GIF or PNG sheet.",
    )
    film.add_argument(
        "--model", required=True, help="zoo model (e.g. shapes-resnet) or torchvision name (resnet18)"
    )
    film.add_argument("--image", required=True, help="picture file (PNG, JPEG, ...)")
    film.add_argument("--out", required=True, help="output file: .mp4, .gif or .png (contact sheet)")
    film.add_argument("--method", default="gradcam", help="CAM method (default: gradcam)")
    film.add_argument("--target", type=int, default=None, help="class index (default: the predicted class)")
    film.add_argument(
        "--kinds", default="conv,block", help="layer kinds, comma separated: conv,block,norm,activation,pool"
    )
    film.add_argument("--normalization", choices=("global", "local"), default="global")
    film.add_argument("--colormap", default="inferno")
    film.add_argument("--alpha", type=float, default=0.6, help="opacity of the map over the picture")
    film.add_argument("--fps", type=float, default=4.0)
    film.add_argument("--size", type=int, default=256, help="longer side of a frame in pixels")
    film.add_argument(
        "--input-size", type=int, default=None, help="square input size for torchvision models (default 224)"
    )
    film.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    film.add_argument("--road", action="store_true", help="score every layer with ybROAD and report the best")
    add_app_parser(commands)
    score = commands.add_parser(
        "evaluate",
        help="methods × metrics over a data set, in-process or on Dask, to Parquet shards",
        description="Evaluate explanation methods over a data set (xai_widgets.evaluate); shards stream to "
        "--out as Parquet and a rerun with the same --out resumes. Prints the summary table.",
    )
    score.add_argument("--model", required=True, help="zoo model (e.g. shapes-resnet) or torchvision name")
    score.add_argument("--data", required=True, help="shapes:N (N synthetic shapes with masks)")
    score.add_argument("--methods", default="gradcam,saliency", help="comma separated method names")
    score.add_argument("--metrics", default="road,pointing_game", help="comma separated metric names")
    score.add_argument(
        "--executor", default="inprocess", help="inprocess, dask, ray, or a Dask scheduler address"
    )
    score.add_argument("--workers", type=int, default=None, help="Dask LocalCluster workers (default: cores)")
    score.add_argument("--batch-size", type=int, default=32)
    score.add_argument("--target", choices=("label", "prediction"), default=None)
    score.add_argument("--out", default=None, help="folder for the Parquet shards (resumable)")
    score.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _camanim(args: argparse.Namespace) -> int:
    from .all_layers import camanim
    from .images import load_image

    adapter = load_model(args.model, args.device, args.input_size)
    x = load_image(args.image, adapter)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    film = camanim(adapter, x, target=args.target, method=args.method, kinds=kinds)
    path = film.save(
        args.out,
        mode=args.normalization,
        colormap=args.colormap,
        alpha=args.alpha,
        size=args.size,
        **({} if Path(args.out).suffix.lower() == ".png" else {"fps": args.fps}),
    )
    target = int(film.target[0]) if film.target is not None else None
    label = adapter.label(target) if target is not None else "custom"
    print(f"{adapter.name}: {args.method} for class {target} ({label}) at {len(film)} layers -> {path}")
    if args.road:
        scores = film.road()
        best = int(scores.best[0])
        for i, name in enumerate(film.names):
            mark = "  <- best" if i == best else ""
            print(f"{i + 1:4d}  {name:40s} ybROAD {float(scores.score[i, 0]):+.4f}{mark}")
    return 0


def _app(args: argparse.Namespace) -> int:
    """Serve the workshop page (:func:`xai_widgets_launch.serve`, which the console script runs without
    importing this package)."""
    try:
        return serve(args.model, args.images, args.port)
    except AppError as error:
        raise XAIError(str(error)) from None


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import DaskExecutor, TextProgress, evaluate

    names = lambda text: [part.strip() for part in text.split(",") if part.strip()]  # noqa: E731
    executor: object = None
    if args.executor == "dask":
        executor = DaskExecutor(n_workers=args.workers)
    elif args.executor == "ray":
        executor = "ray"
    elif args.executor != "inprocess":
        from distributed import Client

        executor = Client(args.executor)
    try:
        result = evaluate(
            load_model(args.model),
            args.data,
            names(args.methods),
            names(args.metrics),
            target=args.target,
            executor=executor,
            batch_size=args.batch_size,
            out=args.out,
            progress=None if args.no_progress else TextProgress(),
        )
    finally:
        if hasattr(executor, "close"):
            executor.close()
    headline = result.summary[~result.summary["metric"].str.contains("@")]
    print(headline.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if len(result.errors):
        print(f"{len(result.errors)} rows with errors (see the 'error' column of the shards)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xai-widgets``; returns the exit status (2 with a message for bad input)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "camanim":
            return _camanim(args)
        if args.command == "app":
            return _app(args)
        if args.command == "evaluate":
            return _evaluate(args)
    except XAIError as error:
        print(f"xai-widgets: error: {error}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
