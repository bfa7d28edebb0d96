"""Activation maximization benchmark: does a backward-only slope help (Linse et al. 2024), and what does a step cost?

1. ``table``: activation reached and saturation for backward slopes {the model's own, 0.1, 0.3, 1.0} × optimisers
   (ascent, normalized, adam) × parameterisations (pixel, fourier), over several classes and starts, with the
   spread (standard deviation over classes × starts), on
   - ``race-of-patterns``: the synthetic function of :func:`xai_widgets.activation_max.race_of_patterns`, in the
     paper's box [−1, 1] (it is built so that plain AM ends white),
   - ``mnist-mlp-d0``: a small ReLU network (the zoo's digits MLP, pictures in [0, 1]),
   - ``shapes-leaky``: the zoo's Leaky-ReLU ResNet (forward slope 0.01, pictures in [0, 1]).
   "white" is the share of pixels at the upper bound in every channel; "saturation" the share of pixel values
   within 1/255 of either bound.
2. ``speed``: the marginal cost of one AM step ((time of ``maximize`` with k steps − with 0 steps) / k: a call
   also sets up and runs one last forward), pixel parameterisation, backward slope 0.3, plain ascent and Adam,
   ÷ the forward+backward floor (one forward and one ``autograd.grad`` with respect to the input, no rule), on
   torchvision resnet18 at 224×224, batch 1 and 8, interleaved rounds, medians of wall and process CPU time.
3. ``live``: the kernel-side cost of the widget's live drawing (``ActivationMaximizer``'s preview: picture to
   uint8, canvas frame, curve update, at most 6 times a second) relative to the same run without it.

    python benchmarks/maximize.py                    # everything; prints markdown tables
    python benchmarks/maximize.py --parts table --quick
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

import xai_widgets as xw
from xai_widgets.activation_max import maximize, race_of_patterns

SLOPES = (None, 0.1, 0.3, 1.0)
OPTIMIZERS = ("ascent", "normalized", "adam")
PARAMETERIZATIONS = ("pixel", "fourier")


def problems(quick: bool) -> list[dict]:
    """The models of the table with their objective, box, steps and learning rates."""
    repeats = 1 if quick else 3
    race = {
        "name": "race-of-patterns",
        "adapter": race_of_patterns(classes=4),
        "targets": [c for c in range(4) for _ in range(repeats)],
        "range": (-1, 1),
        "steps": 60 if quick else 150,
        # its gradient is small (0.05 per pixel): plain ascent needs a large step to move at all
        "lr": {"ascent": 1.0, "normalized": 0.05, "adam": 0.05},
        "forward": 0.01,
    }
    digits = {
        "name": "mnist-mlp-d0",
        "adapter": xw.zoo.load("mnist-mlp-d0", device="cpu"),
        "targets": [c for c in range(10) for _ in range(1 if quick else 2)],
        "range": None,
        "steps": 60 if quick else 150,
        "lr": {},
        "forward": 0.0,
    }
    shapes = {
        "name": "shapes-leaky",
        "adapter": xw.zoo.load("shapes-leaky", device="cpu"),
        "targets": [c for c in range(6) for _ in range(1 if quick else 2)],
        "range": None,
        "steps": 40 if quick else 150,
        "lr": {},
        "forward": 0.01,
    }
    return [race, digits, shapes]


def spread(values: torch.Tensor) -> str:
    return f"{values.mean():.3g} ± {values.std():.2g}" if values.numel() > 1 else f"{values.mean():.3g}"


def table(quick: bool, parameterizations: tuple[str, ...]) -> None:
    for problem in problems(quick):
        adapter, targets = problem["adapter"], problem["targets"]
        print(
            f"\n### {problem['name']} — {len(set(targets))} classes × {len(targets) // len(set(targets))} starts, "
            f"{problem['steps']} steps, box {problem['range'] or '[0, 1] through the preprocessing'}, "
            f"forward slope {problem['forward']}\n"
        )
        print(
            "| param. | optimizer | backward slope | activation reached | ÷ own slope (paired) | saturation | white | s |"
        )
        print("|---|---|---|---:|---:|---:|---:|---:|")
        for parameterization in parameterizations:
            for optimizer in OPTIMIZERS:
                own = None
                for slope in SLOPES:
                    start = time.perf_counter()
                    result = maximize(
                        adapter,
                        target=targets,
                        steps=problem["steps"],
                        optimizer=optimizer,
                        lr=problem["lr"].get(optimizer),
                        backward_slope=slope,
                        parameterization=parameterization,
                        range=problem["range"],
                        seed=1,
                    )
                    own = result.final if own is None else own
                    label = f"{problem['forward']} (own)" if slope is None else f"{slope}"
                    print(
                        f"| {parameterization} | {optimizer} | {label} | {spread(result.final)} | "
                        f"{paired(result.final, own)} | {spread(result.saturation.mean(1))} | "
                        f"{spread(result.white)} | {time.perf_counter() - start:.1f} |",
                        flush=True,
                    )


def paired(values: torch.Tensor, own: torch.Tensor) -> str:
    """Median over starts of value ÷ the same start's value with the model's own slope (same start, same
    class), with the share of starts that gained; ``–`` where the own value is not positive."""
    positive = own > 0
    if not positive.any():
        return "–"
    ratio = values[positive] / own[positive]
    return f"{ratio.median():.2f} ({int((ratio > 1).sum())}/{int(positive.sum())} up)"


def measure(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, tuple[float, float, float]]:
    """(median wall, median CPU, min CPU) seconds of each function, interleaved round by round after a warm-up.

    On a shared machine the minimum process CPU time is the steadiest figure (other jobs only add to it).
    """
    for fn in fns.values():
        fn()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            samples[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (
            statistics.median(s[0] for s in v),
            statistics.median(s[1] for s in v),
            min(s[1] for s in v),
        )
        for name, v in samples.items()
    }


def speed(repeat: int, steps: int) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    adapter = xw.ModelAdapter(model, input_size=(3, 224, 224))
    print(
        f"\n### one AM step ÷ forward+backward floor, resnet18 224×224, {steps} steps per call, {repeat} rounds\n"
    )
    print(
        "| batch | floor ms per step (CPU min / median) | optimizer | AM step ms (CPU min / median) | ratio min / median |"
    )
    print("|---:|---:|---|---:|---:|")
    for batch in (1, 8):
        x = torch.rand(batch, 3, 224, 224)

        def floor(x: torch.Tensor = x) -> None:
            for _ in range(steps):
                source = x.clone().requires_grad_(True)
                torch.autograd.grad(model(source)[:, 1].sum(), source)

        fns: dict[str, Callable[[], object]] = {"floor": floor}
        for optimizer in ("ascent", "adam"):
            for count in (0, steps):
                fns[f"{optimizer} {count}"] = lambda optimizer=optimizer, batch=batch, count=count: maximize(
                    adapter, target=1, n=batch, steps=count, optimizer=optimizer, backward_slope=0.3
                )
        times = measure(fns, repeat if batch == 1 else max(3, repeat // 2))
        base = times["floor"]
        for optimizer in ("ascent", "adam"):
            # the marginal cost of a step: a call also does set-up and one last forward (steps=0 has only those)
            am = [a - b for a, b in zip(times[f"{optimizer} {steps}"], times[f"{optimizer} 0"])]
            print(
                f"| {batch} | {1000 * base[2] / steps:.0f} / {1000 * base[1] / steps:.0f} | {optimizer} | "
                f"{1000 * am[2] / steps:.0f} / {1000 * am[1] / steps:.0f} | {am[2] / base[2]:.2f} / "
                f"{am[1] / base[1]:.2f} |",
                flush=True,
            )


def live(repeat: int) -> None:
    from xai_widgets.widgets.maximizer import ActivationMaximizer

    print(
        f"\n### live drawing cost in the kernel (widget default: at most 6 frames a second), {repeat} rounds\n"
    )
    print(
        "| model | steps | run without preview s (CPU min / median) | with live drawing s | overhead min / median "
        "| frames per run |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    torch.manual_seed(0)
    resnet = xw.ModelAdapter(torchvision.models.resnet18().eval(), input_size=(3, 224, 224))
    cases = [
        ("shapes-leaky 64 px", xw.zoo.load("shapes-leaky", device="cpu"), 200),
        ("resnet18 224 px", resnet, 20),
    ]
    frame_costs: dict[str, float] = {}
    for name, adapter, steps in cases:
        widget = ActivationMaximizer(adapter, target=1, background=False, show_examples=False)

        def with_preview(
            widget: ActivationMaximizer = widget, adapter: xw.ModelAdapter = adapter, steps=steps
        ) -> None:
            maximize(adapter, target=1, steps=steps, preview=widget.previewer(widget._new_line("benchmark")))

        times = measure(
            {
                "plain": lambda adapter=adapter, steps=steps: maximize(adapter, target=1, steps=steps),
                "live": with_preview,
            },
            repeat,
        )
        plain, drawn = times["plain"], times["live"]
        frames = widget.frames_drawn / (repeat + 1)
        pictures = torch.rand(1, *adapter.input_size)
        start = time.process_time()
        for _ in range(20):
            widget._draw(pictures)
        frame_costs[name] = 1000 * (time.process_time() - start) / 20
        print(
            f"| {name} | {steps} | {plain[2]:.2f} / {plain[1]:.2f} | {drawn[2]:.2f} / {drawn[1]:.2f} | "
            f"{100 * (drawn[2] / plain[2] - 1):+.1f}% / {100 * (drawn[1] / plain[1] - 1):+.1f}% | {frames:.0f} |",
            flush=True,
        )
    print("\n| model | one frame, CPU ms | at 6 frames a second: share of each second of optimisation |")
    print("|---|---:|---:|")
    for name, cost in frame_costs.items():
        print(f"| {name} | {cost:.2f} | {6 * cost / 10:.1f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--parts", nargs="+", default=["table", "speed", "live"], choices=["table", "speed", "live"]
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer starts and steps (what the notebook runs)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--parameterizations", nargs="+", default=list(PARAMETERIZATIONS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
        f"Python {platform.python_version()}"
    )
    if "table" in args.parts:
        table(args.quick, tuple(args.parameterizations))
    if "speed" in args.parts:
        speed(args.repeat, steps=4)
    if "live" in args.parts:
        live(max(3, args.repeat // 2))


if __name__ == "__main__":
    main()
