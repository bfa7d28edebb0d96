"""CAManim benchmark: all layers of torchvision resnet18 and resnet50 at 224×224, one image.

Times, in one run on the same model, input and thread count:

- ``floor``: one forward and one ``autograd.grad`` of the target logit with respect to the input;
- ``camanim``: ``xai_widgets.camanim(..., method="gradcam")`` at every conv and block output (one forward, one
  backward for all layers, maps upsampled to 224×224);
- ``per-layer (ours)``: ``explain(..., layer=L)`` for each layer in a loop, the published tool's approach;
- ``per-layer (pytorch-grad-cam)``: ``GradCAM(model, [L])`` for each layer in a loop.

The floor and camanim are measured ``--repeat`` times, interleaved (floor, camanim, floor, camanim, ...) so
that both see the same load, after a warm-up; the loops run ``--loops`` times. Each is reported as the median
wall time and the median process CPU time (all threads), the latter being steadier on a shared machine.
Targets: camanim ≤ 1.5× the floor; pytorch-grad-cam's per-layer loop ≥ 10× slower than camanim.
Weights are random (no download); the timings do not depend on them.

    python benchmarks/camanim.py                    # CPU, 2 threads; CUDA too when available
    python benchmarks/camanim.py --models resnet18 --threads 4 --device cpu
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
from xai_widgets.all_layers import camanim


def measure(fns: dict[str, Callable[[], object]], repeat: int, device: torch.device) -> dict[str, tuple]:
    """Median (wall, CPU) seconds of each function, the functions interleaved round by round."""
    for fn in fns.values():
        fn()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            samples[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (statistics.median(s[0] for s in values), statistics.median(s[1] for s in values))
        for name, values in samples.items()
    }


def run(name: str, device: torch.device, repeat: int, loops: int, peer: bool) -> dict[str, tuple]:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name).eval().to(device)
    x = torch.randn(1, 3, 224, 224, device=device)
    adapter = xw.ModelAdapter(model, input_size=(3, 224, 224))
    target = adapter.logits(x).argmax(1)
    layers = camanim(adapter, x, target).names

    def floor() -> object:
        inputs = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(inputs).gather(1, target.view(-1, 1)).sum(), inputs)

    def single_pass() -> object:
        return camanim(adapter, x, target, method="gradcam")

    def ours_per_layer() -> object:
        return [xw.explain(adapter, x, target, method="gradcam", layer=layer) for layer in layers]

    rows = measure({"floor": floor, "camanim": single_pass}, repeat, device)
    loop_fns = {"ours per layer": ours_per_layer}
    if peer:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(int(target[0]))]

        def peer_per_layer() -> object:
            out = []
            for layer in layers:
                with GradCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
                    out.append(cam(input_tensor=x, targets=targets))
            model.zero_grad(set_to_none=True)  # the peer fills parameter .grad
            return out

        loop_fns["pytorch-grad-cam per layer"] = peer_per_layer
    rows.update(measure(loop_fns, loops, device))
    rows["layers"] = (len(layers), len(layers))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=15, help="rounds of floor/camanim")
    parser.add_argument("--loops", type=int, default=1, help="rounds of the per-layer loops")
    parser.add_argument(
        "--skip-peer", action="store_true", help="leave out pytorch-grad-cam's per-layer loop"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device in ("cuda", "all") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(
        f"# CAManim benchmark — {time.strftime('%Y-%m-%d')}, {platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} CPU threads, 1×3×224×224; floor/camanim median of {args.repeat} interleaved rounds"
    )
    for device in devices:
        for name in args.models:
            rows = run(name, device, args.repeat, args.loops, not args.skip_peer)
            layers = rows.pop("layers")[0]
            floor, single = rows["floor"], rows["camanim"]
            where = f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""
            print(f"\n## {name} on {device.type}{where}: {layers} layers (conv and block outputs)")
            print(f"{'':28s} {'wall s':>8s} {'cpu s':>8s} {'× floor':>16s} {'× camanim':>16s}")
            for label, (wall, cpu) in rows.items():
                ratio_floor = f"{wall / floor[0]:.2f} / {cpu / floor[1]:.2f}"
                ratio_single = f"{wall / single[0]:.2f} / {cpu / single[1]:.2f}"
                print(f"{label:28s} {wall:8.3f} {cpu:8.3f} {ratio_floor:>16s} {ratio_single:>16s}")
    print("\n(ratios: wall / cpu)")


if __name__ == "__main__":
    main()
