"""DLBacktrace: coverage on torchvision models and faithfulness (ROAD) on the shipped models.

    python benchmarks/backtrace.py                 # both parts
    python benchmarks/backtrace.py --part coverage # resnet18, resnet50, vgg16_bn, densenet121, mobilenet_v3_small
    python benchmarks/backtrace.py --part road --images 64

Coverage: each torchvision model (random weights, 1×3×64×64) runs ``backtrace`` and ``backtrace_contrastive``;
reported: whether it ran (or the error), whether the model is unchanged afterwards (parameters, buffers, flags,
hooks), the conservation residual |Σ R_in + absorbed − start| and the time. Speed against the
forward+backward floor is in ``benchmarks/attribution.py`` (its rows include every registered method):

    python benchmarks/attribution.py --models resnet18 --batches 1 8 --methods saliency lrp_composite backtrace \
        backtrace_contrastive --plain-module

Faithfulness: ybROAD (Rong et al. 2022 with noisy linear imputation; CAManim's score, higher is more faithful)
and the mean target probability after removing the most (MoRF, lower is better) and least (LeRF, higher is
better) relevant 20/40/60/80% of the pixels, for each method on the same seeded shapes images.
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

import xai_widgets as xw
from xai_widgets.metrics.road import ybroad

MODELS = ("resnet18", "resnet50", "vgg16_bn", "densenet121", "mobilenet_v3_small")
ROAD_METHODS = (
    ("backtrace", {}),
    ("backtrace_contrastive", {}),
    ("gradcam", {}),
    ("integrated_gradients", {"steps": 32}),
    ("lrp_composite", {}),
    ("saliency", {}),
)


def _state(model: torch.nn.Module) -> list:
    tensors = [t.detach().clone() for t in (*model.parameters(), *model.buffers())]
    flags = [
        (m.training, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), getattr(m, "inplace", None))
        for m in model.modules()
    ]  # fmt: skip
    return [tensors, flags, [p.requires_grad for p in model.parameters()]]


def _same(a: list, b: list) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a[0], b[0])) and a[1:] == b[1:]


def coverage(size: int) -> None:
    print(f"## DLBacktrace coverage (`benchmarks/backtrace.py`), random weights, 1×3×{size}×{size}\n")
    print("| model | method | runs | model unchanged | conservation residual | s |")
    print("|---|---|---|---|---:|---:|")
    for name in MODELS:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval()
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        for method in ("backtrace", "backtrace_contrastive"):
            before = _state(model)
            start = time.perf_counter()
            try:
                e = xw.explain(model, x, 1, method)
                residual = float((e.extras["input_relevance"] + e.extras["bias_absorbed"] - 1).abs().max())
                runs, residual_text = "yes", f"{residual:.1e}"
            except xw.XAIError as error:
                runs, residual_text = f"error: {error}", "–"
            seconds = time.perf_counter() - start
            unchanged = "yes" if _same(before, _state(model)) else "NO"
            print(f"| {name} | {method} | {runs} | {unchanged} | {residual_text} | {seconds:.2f} |")
    print()


def faithfulness(names: list[str], images: int) -> None:
    batch = xw.data.shapes.make_shapes(images, seed=777)
    print(
        f"## DLBacktrace faithfulness (`benchmarks/backtrace.py`), ROAD, {images} shapes images (seed 777), "
        "predicted class\n"
    )
    print("| model | method | ybROAD ↑ | MoRF prob ↓ | LeRF prob ↑ |")
    print("|---|---|---:|---:|---:|")
    for name in names:
        adapter = xw.zoo.load(name, device="cpu")
        x = adapter.preprocess(batch.images)
        target = adapter.logits(x).argmax(1)
        maps = torch.stack([xw.explain(adapter, x, target, m, **o).attribution for m, o in ROAD_METHODS])
        scores = ybroad(adapter, x, maps, target)
        for (method, _), score, morf, lerf in zip(ROAD_METHODS, scores.score, scores.morf, scores.lerf):
            print(
                f"| {name} | {method} | {float(score.mean()):.3f} | {float(morf.mean()):.3f} | "
                f"{float(lerf.mean()):.3f} |"
            )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("coverage", "road", "both"), default="both")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--models", nargs="+", default=["shapes-vgg", "shapes-resnet"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("coverage", "both"):
        coverage(args.size)
    if args.part in ("road", "both"):
        faithfulness(args.models, args.images)


if __name__ == "__main__":
    main()
