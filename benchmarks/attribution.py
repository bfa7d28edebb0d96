"""Time every registered method and the peers (Captum, zennit, pytorch-grad-cam) on the same model and input.

Each time is reported as a ratio to the forward+backward floor: one forward and one ``autograd.grad`` with
respect to the input, on the same model, batch and thread count, in the same run.

    python benchmarks/attribution.py                       # resnet18 + vgg16, batch 1 and 8, 224×224, CPU
    python benchmarks/attribution.py --models resnet18 --batches 1 --skip-expensive
    python benchmarks/attribution.py --device cuda
    python benchmarks/attribution.py --models resnet18 shapes-resnet --batches 1 --methods saliency gradcam \
        lrp_composite --plain-module                       # + the plain nn.Module call of each method
    python benchmarks/attribution.py --models resnet18 --batches 1 8 --methods lrp_composite backtrace \
        backtrace_contrastive --plain-module               # the DLBacktrace rows (goal: ≤ 2× / ≤ 3× the floor)
    python benchmarks/attribution.py --models vit_b_16 --batches 1 --methods gradcam attention_rollout \
        gradient_rollout                                   # the ViT block (goal: ≤ 1.3× the floor)

Weights are random (no download; a zoo name such as ``shapes-resnet`` loads the shipped model at its own size);
the timings do not depend on them. ``--plain-module`` adds two rows per method: ``xw.explain(model, ...)`` with the
``nn.Module`` itself (the adapter is cached per module) and with a new ``ModelAdapter`` per call (what the
plain-module call cost before the cache).
"""

from __future__ import annotations

import argparse
import functools
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import torchvision

import xai_widgets as xw

warnings.filterwarnings("ignore")

EXPENSIVE = {"scorecam", "ablationcam", "integrated_gradients", "smoothgrad", "vargrad"}
CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def _clock(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = clock()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (clock() - start) * 1000


def paired(
    fn: Callable[[], object], base: Callable[[], object], repeat: int, device: torch.device
) -> tuple[float, float]:
    """(median ms of ``fn``, median of fn ÷ floor) with the floor timed right before each call, so a change in
    machine load between rounds moves both, after one warm-up call of each. A single round (the expensive
    methods) takes the median of three floors."""
    base()
    fn()
    times, ratios = [], []
    for _ in range(repeat):
        floor_ms = statistics.median(_clock(base, device) for _ in range(3 if repeat == 1 else 1))
        ms = _clock(fn, device)
        times.append(ms)
        ratios.append(ms / floor_ms)
    return statistics.median(times), statistics.median(ratios)


def floor(model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        inp = x.clone().requires_grad_(True)
        return torch.autograd.grad(model(inp).gather(1, target[:, None]).sum(), inp)

    return run


def cam_layer(name: str, model: torch.nn.Module) -> tuple[str, torch.nn.Module]:
    if name.startswith("resnet"):
        return "layer4", model.layer4
    if name.startswith("vgg"):
        return "features.29", model.features[29]
    entry = xw.as_adapter(model).default_cam_layer()
    return entry.name, entry.module


def peers(
    name: str, model: torch.nn.Module, x: torch.Tensor, target: torch.Tensor
) -> dict[str, tuple[str, Callable]]:
    """Peer implementations keyed by our method name: (label, callable)."""
    out: dict[str, tuple[str, Callable]] = {}
    t = target.tolist()
    try:
        from captum.attr import Deconvolution, GuidedBackprop, InputXGradient, IntegratedGradients, Saliency

        out["saliency"] = ("captum Saliency", lambda: Saliency(model).attribute(x, target=t, abs=False))
        out["input_x_gradient"] = (
            "captum InputXGradient",
            lambda: InputXGradient(model).attribute(x, target=t),
        )
        out["integrated_gradients"] = (
            "captum IG",
            lambda: IntegratedGradients(model).attribute(x, target=t, n_steps=50, internal_batch_size=64),
        )
        out["guided_backprop"] = (
            "captum GuidedBackprop",
            lambda: GuidedBackprop(model).attribute(x, target=t),
        )
        out["deconvnet"] = ("captum Deconvolution", lambda: Deconvolution(model).attribute(x, target=t))
    except ImportError:
        pass
    try:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonGammaBox, LayerMapComposite, SpecialFirstLayerMapComposite
        from zennit.rules import AlphaBeta, Epsilon, Norm, Pass, ZBox
        from zennit.torchvision import ResNetCanonizer, VGGCanonizer
        from zennit.types import Activation, AvgPool, Convolution, Linear

        canonizers = [ResNetCanonizer()] if name.startswith("resnet") else [VGGCanonizer()]
        onehot = torch.zeros(x.shape[0], 1000, device=x.device)
        onehot[torch.arange(x.shape[0]), target] = 1

        def zennit_run(composite) -> Callable:
            def run() -> object:
                with Gradient(model=model, composite=composite) as attributor:
                    return attributor(x, onehot)[1]

            return run

        out["lrp_epsilon"] = (
            "zennit Epsilon",
            zennit_run(
                LayerMapComposite(
                    layer_map=[
                        (Activation, Pass()),
                        (AvgPool, Norm()),
                        (Convolution, Epsilon()),
                        (Linear, Epsilon()),
                    ],
                    canonizers=canonizers,
                )
            ),
        )
        box = {"low": torch.full_like(x, -3.0), "high": torch.full_like(x, 3.0)}
        out["lrp_composite"] = (
            "zennit ε/α1β0/zᴮ",
            zennit_run(
                SpecialFirstLayerMapComposite(
                    layer_map=[
                        (Activation, Pass()),
                        (AvgPool, Norm()),
                        (Convolution, AlphaBeta(1.0, 0.0)),
                        (Linear, Epsilon()),
                    ],
                    first_map=[(Convolution, ZBox(**box))],
                    canonizers=canonizers,
                )
            ),
        )
        out["lrp_composite middle=gamma"] = (
            "zennit EpsilonGammaBox",
            zennit_run(EpsilonGammaBox(canonizers=canonizers, **box)),
        )
    except ImportError:
        pass
    try:
        from pytorch_grad_cam import (
            AblationCAM,
            EigenCAM,
            GradCAM,
            GradCAMPlusPlus,
            HiResCAM,
            LayerCAM,
            ScoreCAM,
            XGradCAM,
        )
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(int(c)) for c in t]
        layer = cam_layer(name, model)[1]
        reshape = None
        if name.startswith("vit"):  # pytorch-grad-cam's documented ViT recipe: drop the class token, grid
            side = x.shape[-1] // model.patch_size

            def reshape(tensor: torch.Tensor) -> torch.Tensor:
                result = tensor[:, 1:, :].reshape(tensor.size(0), side, side, tensor.size(2))
                return result.transpose(2, 3).transpose(1, 2)

        for ours, cls in [
            ("gradcam", GradCAM),
            ("gradcam_pp", GradCAMPlusPlus),
            ("xgradcam", XGradCAM),
            ("layercam", LayerCAM),
            ("hirescam", HiResCAM),
            ("eigencam", EigenCAM),
            ("scorecam", ScoreCAM),
            ("ablationcam", AblationCAM),
        ]:

            def run(cls=cls) -> object:
                with cls(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
                    if hasattr(cam, "batch_size"):
                        cam.batch_size = 64
                    return cam(input_tensor=x, targets=targets)

            out[ours] = (f"pytorch-grad-cam {cls.__name__}", run)
    except ImportError:
        pass
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--skip-expensive", action="store_true", help="leave out Score-CAM, Ablation-CAM, IG, SmoothGrad"
    )
    parser.add_argument("--methods", nargs="*", help="only these of our methods")
    parser.add_argument(
        "--plain-module", action="store_true", help="also time explain(nn.Module) and a new adapter per call"
    )
    parser.add_argument(
        "--clock",
        choices=list(CLOCK),
        default="wall",
        help="cpu: process CPU time (with --threads 1, robust to other work sharing the machine's cores)",
    )
    args = parser.parse_args()
    global clock
    clock = CLOCK[args.clock]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"# attribution benchmark — {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, device {device}, {args.threads} threads, {args.size}×{args.size}\n"
    )
    for name in args.models:
        torch.manual_seed(0)
        if name in xw.zoo.names():
            adapter = xw.zoo.load(name, device=device)
            model, size = adapter.model, adapter.input_size[1]
        else:
            model = getattr(torchvision.models, name)().eval().to(device)
            adapter = xw.ModelAdapter(model, input_size=(3, args.size, args.size))
            size = args.size
        layer = cam_layer(name, model)[0]
        for batch in args.batches:
            x = torch.randn(batch, 3, size, size, device=device)
            target = torch.arange(batch, device=device) % adapter.num_classes
            base = floor(model, x, target)
            base_ms = _clock(base, device)
            print(f"## {name}, {size}×{size}, batch {batch}: forward+backward floor ≈ {base_ms:.1f} ms\n")
            print("| method | ours ms | ours × floor | peer | peer ms | peer × floor |")
            print("|---|---:|---:|---|---:|---:|")
            theirs = peers(name, model, x, target)
            rows = [
                (info.name, info.name, {"layer": layer} if info.needs_layer else {}) for info in xw.methods()
            ]
            rows.append(("lrp_composite middle=gamma", "lrp_composite", {"middle": "gamma"}))
            for label, method, kwargs in rows:
                if args.methods and method not in args.methods:
                    continue
                if args.skip_expensive and method in EXPENSIVE:
                    continue
                repeat = 1 if method in EXPENSIVE else args.repeat
                try:
                    run = functools.partial(xw.explain, adapter, x, target, method, **kwargs)
                    ms, ratio = paired(run, base, repeat, device)
                    ours = f"{ms:.1f} | {ratio:.2f}"
                except xw.XAIError as error:
                    ours = f"error: {error} | –"
                peer, peer_ms, peer_ratio = "–", "–", "–"
                if label in theirs:
                    peer, fn = theirs[label]
                    try:
                        p, pr = paired(fn, base, repeat, device)
                        peer_ms, peer_ratio = f"{p:.1f}", f"{pr:.2f}"
                    except Exception as error:  # a peer failing is a result, not a crash of the benchmark
                        peer_ms = f"fails: {type(error).__name__}"
                print(f"| {label} | {ours} | {peer} | {peer_ms} | {peer_ratio} |")
                if args.plain_module:
                    for how, wrap in [("nn.Module", None), ("new adapter per call", xw.ModelAdapter)]:

                        def run(
                            wrap=wrap, model=model, x=x, target=target, method=method, kwargs=kwargs
                        ) -> object:
                            return xw.explain(
                                model if wrap is None else wrap(model), x, target, method, **kwargs
                            )

                        ms, ratio = paired(run, base, repeat, device)
                        print(f"| {label} ({how}) | {ms:.1f} | {ratio:.2f} | – | – | – |")
            print()


if __name__ == "__main__":
    main()
