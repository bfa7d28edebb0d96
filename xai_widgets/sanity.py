"""Sanity checks for saliency maps: the model parameter randomization test (Adebayo et al., NeurIPS 2018).

The weights of the model are re-initialised from the logits downwards, one layer (or block) more at each
step (*cascading*), or one layer at a time (*independent*). A map that depends on what the model learned
must change; a map that stays the same shows the input rather than the model.

Every layer is re-initialised by its own initialiser (the one its ``reset_parameters`` uses), called on a
copy of just that layer under a seed of its own, ``seed * 100_000 + rank`` where ``rank`` counts the
layers from the top (1 = the layer that produces the logits). The random weights of a layer therefore
depend only on the seed and the layer: cascading step k+1 keeps the weights of step k and adds one layer,
independent step k uses exactly the weights cascading gave that layer, and a block step equals the layer
step that ends at the block's lowest layer. The randomized weights never enter the user's module: they are
returned as a dictionary for ``torch.func.functional_call`` (``ModelAdapter.forward(x, params)`` or
``with adapter.using_params(params):``).

BatchNorm: ``reset_parameters`` sets its affine weight to 1 and bias to 0; its running statistics are
kept (they describe the trained layers below it) unless ``reset_bn_stats=True``, which sets them to mean 0,
variance 1 as a freshly built layer has them (Quantus's MPRT re-initialises them too).
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .errors import LayerError, MethodError
from .explain import explain
from .model import ModelAdapter, Target, as_adapter, gradients_enabled, layer_kind
from .registry import method_specs as _method_specs

MODES = ("cascading", "independent")
GRANULARITIES = ("layer", "block")
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_SEED_STRIDE = 100_000
# the last weights drawn for each layer module (they depend on its seed and shapes, never on its values), so
# moving a widget's slider back and forth does not redraw them; weak keys free them with the model
_DRAWN: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[str, Tensor]]] = weakref.WeakKeyDictionary()
# seeding the global generator (inside fork_rng) must not interleave between threads (a widget's worker)
_DRAW_LOCK = threading.Lock()

Progress = Callable[[int, int], None] | None


@dataclass(frozen=True)
class Step:
    """One randomization step: ``index`` counts from the top (1 = logits layer), ``layers`` are the
    module names whose parameters it re-initialises (one for ``layer`` granularity, all of a block's)."""

    index: int
    name: str
    layers: tuple[str, ...]


def _has_own_params(module: nn.Module) -> bool:
    return any(p is not None for p in module._parameters.values())


def _initializer(module: nn.Module) -> Callable[[], None] | None:
    """The module's own initialiser: ``reset_parameters``, or ``_reset_parameters`` for torchvision's
    ``MultiheadAttention`` (the attention projections of a ViT block), else None."""
    reset = getattr(module, "reset_parameters", None)
    if reset is None and isinstance(module, nn.MultiheadAttention):
        reset = module._reset_parameters
    return reset if callable(reset) else None


def _layer_units(adapter: ModelAdapter) -> list[str]:
    """Names of the modules that own parameters and can re-initialise them, top (logits) first.

    Forward order comes from the adapter's catalogue; modules that never run are left out, and so are
    parameters of modules without ``reset_parameters`` (they have no initialiser of their own).
    """
    order = {layer.name: layer.index for layer in adapter.layers()}
    units = [
        name
        for name, module in adapter.model.named_modules()
        if name in order and _has_own_params(module) and _initializer(module) is not None
    ]
    return sorted(units, key=lambda name: order[name], reverse=True)


def _blocks(model: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    """Blocks as ``(name, module names)``: the children (with parameters) of the model and of its
    Sequential/ModuleList/ModuleDict containers, descended until a module that is not a plain container (a
    residual block, a leaf layer). A container of leaf layers only (a VGG ``features`` or ``classifier``) is
    cut after each pooling layer, so a VGG stage is one block and a dense head without pooling another."""
    found: list[tuple[str, tuple[str, ...]]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            full = f"{prefix}.{name}" if prefix else name
            if next(child.parameters(), None) is None:
                continue
            if not isinstance(child, _CONTAINERS):
                if _holds_block_stack(child):  # a transformer's encoder: its blocks are the steps
                    visit(full, child)
                else:
                    found.append((full, (full,)))
            elif all(len(grandchild._modules) == 0 for grandchild in child.children()):
                found.extend(_stages(full, child))
            else:
                visit(full, child)

    visit("", model)
    return found


def _holds_block_stack(module: nn.Module) -> bool:
    """True when a child of ``module`` is a container of two or more blocks (modules with children of their
    own), as torchvision's ViT ``Encoder`` holds its ``layers``; a residual block's ``downsample`` (a container
    of plain layers) is not."""
    return any(
        isinstance(child, _CONTAINERS)
        and len(child._modules) >= 2
        and all(len(grandchild._modules) > 0 for grandchild in child.children())
        for child in module.children()
    )


def _stages(prefix: str, container: nn.Module) -> list[tuple[str, tuple[str, ...]]]:
    """Cut a container of leaf layers after each pooling layer; one block when it has no pooling."""
    children = list(container.named_children())
    if not any(layer_kind(child) == "pool" for _, child in children[:-1]):
        return [(prefix, tuple(f"{prefix}.{name}" for name, _ in children))]
    stages, current = [], []
    for name, child in children:
        current.append(name)
        if layer_kind(child) == "pool":
            stages.append(current)
            current = []
    if current:
        stages.append(current)
    return [(f"{prefix}[{names[0]}..{names[-1]}]", tuple(f"{prefix}.{n}" for n in names)) for names in stages]


def plan(model: nn.Module | ModelAdapter, granularity: str = "layer") -> list[Step]:
    """The randomization steps of ``model`` in order, top (logits) first; see :func:`steps`."""
    adapter = as_adapter(model)
    if granularity not in GRANULARITIES:
        raise LayerError(f"granularity must be one of {', '.join(GRANULARITIES)}, got {granularity!r}")
    units = _layer_units(adapter)
    if not units:
        raise LayerError(f"{adapter.name} has no layer with parameters and a reset_parameters initialiser")
    if granularity == "layer":
        return [Step(i + 1, name, (name,)) for i, name in enumerate(units)]
    rank = {name: i for i, name in enumerate(units)}
    groups = []
    for block, modules in _blocks(adapter.model):
        members = tuple(u for u in units if any(u == m or u.startswith(m + ".") for m in modules))
        if members:
            groups.append((min(rank[u] for u in members), block, members))
    groups.sort()
    return [Step(i + 1, block, members) for i, (_, block, members) in enumerate(groups)]


def steps(model: nn.Module | ModelAdapter, granularity: str = "layer") -> list[str]:
    """Names of the randomization steps, top (logits) first: step k of :func:`randomized` is ``steps()[k-1]``.

    ``layer``: every module that owns parameters and has ``reset_parameters`` (conv, linear, norm layers), in
    reverse forward order. ``block``: the model's children, descending through Sequential/ModuleList
    containers down to the first module that is not a container (a ResNet ``BasicBlock``); a container of
    plain layers is cut after each pooling layer (a VGG stage, named ``features[conv1_1..pool1]``) and is one
    block when it has no pooling (a dense ``classifier`` head).
    """
    return [step.name for step in plan(model, granularity)]


class _Reinitializer:
    """Re-initialises single layers on copies, with one seed per layer; caches what it drew."""

    def __init__(self, adapter: ModelAdapter, seed: int, reset_bn_stats: bool) -> None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise MethodError(f"seed must be a non-negative int, got {seed!r}")
        self.adapter = adapter
        self.seed = seed
        self.reset_bn_stats = bool(reset_bn_stats)
        self.rank = {name: i + 1 for i, name in enumerate(_layer_units(adapter))}
        self.modules = dict(adapter.model.named_modules())

    def base(self) -> dict[str, Tensor]:
        """The model's own parameters (the same tensors: read-only) and copies of its buffers."""
        model = self.adapter.model
        params = dict(model.named_parameters())
        params.update({name: b.detach().clone() for name, b in model.named_buffers()})
        return params

    def layer(self, name: str) -> dict[str, Tensor]:
        """Fresh tensors for the parameters (and, with ``reset_bn_stats``, buffers) of one layer."""
        module = self.modules[name]
        originals = dict(module.named_parameters(recurse=False))
        if self.reset_bn_stats:
            originals.update(module.named_buffers(recurse=False))
        key = (
            self.seed * _SEED_STRIDE + self.rank[name],
            self.reset_bn_stats,
            tuple((k, v.shape, v.dtype, v.device) for k, v in originals.items() if v is not None),
        )
        cached = _DRAWN.get(module)
        if cached is None or cached[0] != key:
            with _DRAW_LOCK, torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(key[0])
                clone = copy.deepcopy(module).to("cpu")
                _initializer(clone)()
                fresh = dict(clone.named_parameters(recurse=False))
                fresh.update(clone.named_buffers(recurse=False))
            tensors = {
                key_: fresh[key_].detach().to(value.device, value.dtype).requires_grad_(value.requires_grad)
                for key_, value in originals.items()
                if value is not None and key_ in fresh
            }
            cached = (key, tensors)
            _DRAWN[module] = cached
        return {f"{name}.{k}": v for k, v in cached[1].items()}


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise MethodError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


@gradients_enabled()
def randomized(
    model: nn.Module | ModelAdapter,
    mode: str = "cascading",
    step: int = 1,
    granularity: str = "layer",
    seed: int = 0,
    reset_bn_stats: bool = False,
) -> dict[str, Tensor]:
    """Parameters and buffers of ``model`` with layers re-initialised, for ``torch.func.functional_call``.

    Args:
        model: an ``nn.Module`` or ModelAdapter (never modified).
        mode: ``cascading`` re-initialises the top ``step`` layers (or blocks), from the logits down;
            ``independent`` only the ``step``-th from the top.
        step: 0 (the trained weights) to ``len(steps(model, granularity))``.
        granularity: ``layer`` or ``block`` (see :func:`steps`).
        seed: the weights of each layer are drawn under ``seed * 100000 + rank`` (rank from the top).
        reset_bn_stats: also reset running statistics of re-initialised norm layers (Quantus MPRT does).

    Returns:
        A dict ``{name: tensor}`` of every parameter and buffer. Parameters not re-initialised are the
        model's own (read-only), re-initialised ones have the same ``requires_grad`` (so activations stay in
        the autograd graph; no ``.grad`` is ever written); buffers are copies.

    Example:
        >>> import torchvision
        >>> from xai_widgets import ModelAdapter
        >>> adapter = ModelAdapter(torchvision.models.resnet18(num_classes=10).eval(), input_size=(3, 32, 32))
        >>> params = randomized(adapter, "cascading", step=1)
        >>> bool((params["fc.weight"] != adapter.model.fc.weight).any())
        True
    """
    _check_mode(mode)
    adapter = as_adapter(model)
    schedule = plan(adapter, granularity)
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or not 0 <= step <= len(schedule):
        raise LayerError(
            f"step must be an int in 0..{len(schedule)} ({adapter.name} has {len(schedule)} {granularity} "
            f"steps), got {step!r}"
        )
    reinit = _Reinitializer(adapter, seed, reset_bn_stats)
    params = reinit.base()
    chosen = schedule[:step] if mode == "cascading" else schedule[step - 1 : step] if step else []
    for entry in chosen:
        for layer in entry.layers:
            params.update(reinit.layer(layer))
    return params


@gradients_enabled()
def sweep(
    model: nn.Module | ModelAdapter,
    mode: str = "cascading",
    granularity: str = "layer",
    seed: int = 0,
    reset_bn_stats: bool = False,
) -> Iterator[tuple[Step | None, dict[str, Tensor]]]:
    """Yield ``(step, params)`` for step 0 (``None``, the trained weights) and every step in order.

    Equal to calling :func:`randomized` for each step, but every layer is re-initialised only once.
    """
    _check_mode(mode)
    adapter = as_adapter(model)
    schedule = plan(adapter, granularity)
    reinit = _Reinitializer(adapter, seed, reset_bn_stats)
    base = reinit.base()
    yield None, dict(base)
    current = dict(base)
    for entry in schedule:
        params = current if mode == "cascading" else dict(base)
        for layer in entry.layers:
            params.update(reinit.layer(layer))
        yield entry, dict(params)


@gradients_enabled()
def randomization_test(
    model: nn.Module | ModelAdapter,
    x: Tensor,
    target: Target = None,
    methods: str | Sequence[str] | Mapping[str, Mapping[str, Any]] = ("saliency", "guided_backprop"),
    mode: str = "cascading",
    granularity: str = "layer",
    metrics: Sequence[str] = ("spearman_abs", "spearman", "ssim", "hog"),
    seed: int = 0,
    reset_bn_stats: bool = False,
    progress: Progress = None,
) -> pd.DataFrame:
    """The model parameter randomization test of Adebayo et al. (2018) for several methods at once.

    For step 0 (the trained model) and each randomization step, every method explains ``x`` for the same
    ``target`` (default: the trained model's prediction) under the randomized weights, and each map is
    compared with the method's map on the trained model (see ``xai_widgets.metrics.similarity``).

    Args:
        model: an ``nn.Module`` or ModelAdapter (never modified).
        x: a model-input batch N×C×H×W.
        target: class indices or None for the trained model's prediction; kept fixed over the steps.
        methods: registered method names, or ``{name: options}`` (``options`` may hold ``layer``).
        mode, granularity, seed, reset_bn_stats: as in :func:`randomized`.
        metrics: any of ``spearman_abs``, ``spearman``, ``ssim``, ``hog``, ``pearson``, ``mse``.
        progress: called as ``progress(done, total)`` after each step × method; may raise Cancelled.

    Returns:
        A long DataFrame with one row per step × method × metric: ``step`` (0 = trained), ``layer`` (the
        step's name), ``method``, ``metric``, ``mean`` and ``std`` over the batch, and the randomized model's
        ``accuracy`` (share of samples still predicted as ``target``) and mean softmax ``target_prob``.
    """
    from .metrics.similarity import METRICS, compare

    _check_mode(mode)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise MethodError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    specs = _method_specs(methods)
    adapter = as_adapter(model)
    x = adapter.prepare(x)
    target = adapter.resolve_target(target, x)
    if callable(target) and not isinstance(target, Tensor):
        raise MethodError("randomization_test needs class indices as target (not a callable)")
    total = (len(plan(adapter, granularity)) + 1) * len(specs)
    rows: list[dict[str, Any]] = []
    originals: dict[str, Any] = {}
    done = 0
    for entry, params in sweep(adapter, mode, granularity, seed, reset_bn_stats):
        with adapter.using_params(None if entry is None else params):
            probs = torch.softmax(adapter.logits(x).float(), dim=1)
            accuracy = float((probs.argmax(1) == target).float().mean())
            target_prob = float(probs.gather(1, target.view(-1, 1)).mean())
            for name, options in specs.items():
                result = explain(adapter, x, target, name, **options)
                if entry is None:
                    originals[name] = result
                scores = compare(originals[name], result, metrics)
                for metric, values in scores.items():
                    values = values.double().cpu()
                    rows.append(
                        {
                            "step": 0 if entry is None else entry.index,
                            "layer": "original" if entry is None else entry.name,
                            "method": name,
                            "metric": metric,
                            "mean": float(values.mean()),
                            "std": float(values.std(unbiased=False)),
                            "accuracy": accuracy,
                            "target_prob": target_prob,
                        }
                    )
                done += 1
                if progress is not None:
                    progress(done, total)
    return pd.DataFrame(rows)
