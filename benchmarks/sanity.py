"""Benchmark: a full cascading model-randomization sweep, xai_widgets against Quantus's MPRT.

For each model (the shipped ``shapes-vgg`` at 64×64, and torchvision's resnet18 at 224×224 with random
weights, as no pretrained weights are downloaded), 8 images and the methods saliency, guided_backprop,
gradcam and lrp_composite, every cascading step (one layer more from the logits down) is explained and
compared with the trained model's map:

- ours: ``xai_widgets.sanity.randomization_test`` (all methods in one sweep, each layer re-initialised once,
  weights substituted with ``functional_call``), timed with the Spearman metric only (what MPRT computes by
  default) and with all four of Adebayo et al.'s metrics;
- Quantus: ``quantus.MPRT`` (``layer_order="top_down"``, Spearman), one call per method, with the peers
  Quantus uses for them: Captum's Saliency and LayerGradCam (at the same layer), zennit's GuidedBackprop
  composite (Quantus's Captum menu has none) and ``EpsilonGammaBox`` composite (the rules of our
  ``lrp_composite``).

Both randomize the same layers (every module with ``reset_parameters``: conv, linear, BatchNorm). Times are
wall-clock on the CPU (and on CUDA with ``--device cuda`` where available), with the forward+backward floor
(one input gradient of the batch per method and step) for scale. Run: ``python benchmarks/sanity.py``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import xai_widgets as xw
from xai_widgets import sanity, zoo
from xai_widgets.data.shapes import make_shapes

METHODS = ("saliency", "guided_backprop", "gradcam", "lrp_composite")


def _model(name: str, device: str) -> tuple[xw.ModelAdapter, torch.Tensor, torch.Tensor]:
    """Adapter, 8 model-input images and their labels for ``name``."""
    if name == "resnet18":
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.resnet18().eval().to(device)
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        adapter = xw.ModelAdapter(model, mean=mean, std=std, input_size=(3, 224, 224), name="resnet18")
        batch = make_shapes(8, size=224, seed=11)
    else:
        adapter = zoo.load(name, device=device)
        batch = make_shapes(8, size=adapter.input_size[-1], seed=11)
    return adapter, adapter.preprocess(batch.images), batch.labels.to(device)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class Clock:
    """Wall-clock and process CPU seconds of a block (CPU time is robust to other processes on a shared
    machine; with one thread it is the compute cost)."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __enter__(self) -> Clock:
        _sync(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        _sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def time_ours(
    adapter: xw.ModelAdapter, x: torch.Tensor, target: torch.Tensor, metrics: tuple[str, ...], device: str
) -> Clock:
    with Clock(device) as clock:
        sanity.randomization_test(adapter, x, target, METHODS, "cascading", "layer", metrics=metrics)
    return clock


def time_floor(adapter: xw.ModelAdapter, x: torch.Tensor, target: torch.Tensor, device: str) -> Clock:
    """One plain forward and input gradient of the batch per method and step: what no sweep goes below."""
    calls = (len(sanity.steps(adapter)) + 1) * len(METHODS)

    def gradient() -> None:
        inputs = x.detach().clone().requires_grad_(True)
        torch.autograd.grad(adapter.model(inputs).gather(1, target.view(-1, 1)).sum(), inputs)

    gradient()
    with Clock(device) as clock:
        for _ in range(5):
            gradient()
    clock.wall, clock.cpu = clock.wall / 5 * calls, clock.cpu / 5 * calls
    return clock


def _quantus_kwargs(name: str, adapter: xw.ModelAdapter, method: str) -> dict:
    size = tuple(adapter.input_size[1:])
    layer = adapter.default_cam_layer().name
    if method == "saliency":
        return {"method": "Saliency"}
    if method == "guided_backprop":  # Quantus's Captum menu has no GuidedBackprop; zennit's composite
        return {"xai_lib": "zennit", "composite": "guided_backprop"}
    if method == "gradcam":
        return {"method": "LayerGradCam", "gc_layer": f"model.{layer}", "interpolate": size}
    from zennit.torchvision import ResNetCanonizer

    mean = torch.tensor(adapter.mean).view(1, -1, 1, 1)
    std = torch.tensor(adapter.std).view(1, -1, 1, 1)
    kwargs = {
        "xai_lib": "zennit",
        "composite": "epsilon_gamma_box",
        "composite_kwargs": {"low": (0 - mean) / std, "high": (1 - mean) / std},
    }
    if name == "resnet18":
        kwargs["canonizer"] = ResNetCanonizer
    return kwargs


def time_quantus(
    name: str, adapter: xw.ModelAdapter, x: torch.Tensor, target: torch.Tensor, device: str
) -> dict:
    import quantus

    x_np, y_np = x.detach().cpu().numpy(), target.cpu().numpy()
    times = {}
    for method in METHODS:
        metric = quantus.MPRT(layer_order="top_down", disable_warnings=True, display_progressbar=False)
        kwargs = {**_quantus_kwargs(name, adapter, method), "device": device}
        with Clock(device) as clock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = metric(
                model=adapter.model,
                x_batch=x_np,
                y_batch=y_np,
                a_batch=None,
                channel_first=True,
                explain_func=quantus.explain,
                explain_func_kwargs=kwargs,
                device=device,
                batch_size=len(x_np),
            )
        times[method] = clock
        times[f"{method}_layers"] = len(scores) - 1
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["shapes-vgg", "resnet18"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-quantus", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads")
    rows = []
    for name in args.models:
        adapter, x, target = _model(name, args.device)
        floor = time_floor(adapter, x, target, args.device)
        ours = time_ours(adapter, x, target, ("spearman_abs",), args.device)
        every = time_ours(adapter, x, target, ("spearman_abs", "spearman", "ssim", "hog"), args.device)
        row = {
            "model": name,
            "steps": len(sanity.steps(adapter)),
            "floor": floor,
            "ours": ours,
            "every": every,
        }
        if not args.skip_quantus:
            quantus_times = time_quantus(name, adapter, x, target, args.device)
            row["quantus_steps"] = quantus_times["saliency_layers"]
            row["quantus_methods"] = {m: quantus_times[m] for m in METHODS}
            row["quantus"] = Clock(args.device)
            row["quantus"].wall = sum(c.wall for c in row["quantus_methods"].values())
            row["quantus"].cpu = sum(c.cpu for c in row["quantus_methods"].values())
        rows.append(row)
        print(
            name,
            {
                k: (f"{v.wall:.1f}s wall / {v.cpu:.1f}s cpu" if isinstance(v, Clock) else v)
                for k, v in row.items()
                if k != "quantus_methods"
            },
            {m: f"{c.wall:.1f}s / {c.cpu:.1f}s" for m, c in row.get("quantus_methods", {}).items()},
            flush=True,
        )
    print()
    print(
        "| model | steps | fwd+bwd floor | ours, Spearman | ours, 4 metrics | Quantus MPRT | Quantus / ours |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [f"{row[k].wall:.1f} s ({row[k].cpu:.1f} s cpu)" for k in ("floor", "ours", "every")]
        quantus_cell, ratio = "–", "–"
        if "quantus" in row:
            quantus_cell = f"{row['quantus'].wall:.1f} s ({row['quantus'].cpu:.1f} s cpu)"
            ratio = f"{row['quantus'].wall / row['ours'].wall:.1f}× ({row['quantus'].cpu / row['ours'].cpu:.1f}× cpu)"
        print(f"| {row['model']} | {row['steps']} | {' | '.join(cells)} | {quantus_cell} | {ratio} |")


if __name__ == "__main__":
    main()
