"""Activation Spectroscopy: a layer's units as Boolean inputs of the network above it.

Reing, Ver Steeg and Galstyan (arXiv 2501.15435) cast the sub-network between a layer L and the output as a
pseudo-Boolean function of the units' on/off states and read which *subsets* of units carry a decision from
its Fourier coefficients. Here unit i of L takes its **on** value where b_i = +1 and its **off** value where
b_i = −1; every other unit of L keeps the value it has on the input; the rest of the network computes f:

- ``"indicator"``: +1 when the model predicts the target class, −1 otherwise;
- ``"logit"``: the target logit; ``"probability"``: the target's softmax probability.

With several inputs f(b) is the mean over them (the function over a data set); with one input it is that
input's function. A unit is a channel of a conv layer (its whole map switches together) and an element
of a flat layer: the units are indexed along dimension 1 of the layer's output.

The states are drawn (search) or enumerated (exact) independently and uniformly, whatever the units'
observed activations do together, so correlated units need no non-redundancy filter: the characters
Π_{i∈S} b_i stay orthonormal and each subset's coefficient is its own.

The authors' research code shows three traps avoided here: its masking hook computed the replacement
without returning it (so nothing was masked; ``ModelAdapter.replace_output`` returns it), dropout stayed
active while f was evaluated (here every evaluation runs in eval behaviour, flags restored after), and a
thousand samples per estimate turned noise into coefficients (the search sizes its samples from τ).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError, LayerError, MethodError
from ..model import LayerInfo, ModelAdapter, Target, as_adapter, gradients_enabled
from .fourier import Progress, Spectrum, fourier

FUNCTIONS = ("indicator", "logit", "probability")
_ROW_ELEMENTS = 1 << 23


@gradients_enabled()
def unit_relevance(
    adapter: ModelAdapter, layer: str | nn.Module, inputs: Tensor, target: Target = None
) -> Tensor:
    """|activation × gradient| of each unit of ``layer`` (summed over a channel's map), averaged over inputs.

    The gradient is that of the target logit; this first-order Taylor term ranks the units whose switching
    moves the decision most, and picks the n units an exact spectrum can afford.
    """
    inputs = adapter.prepare(inputs)
    entry = adapter.resolve_layer(layer)
    capture = adapter.capture(inputs, [entry.name], target, maps=False)
    act, grad = capture.acts[entry.name], capture.grads[entry.name]
    if grad is None:
        raise LayerError(
            f"the target does not depend on layer {entry.name!r}, so its units have no relevance"
        )
    relevance = (act * grad).abs()
    return relevance.reshape(*relevance.shape[:2], -1).sum(-1).mean(0)


def select_units(
    adapter: ModelAdapter, layer: str | nn.Module, inputs: Tensor, count: int, target: Target = None
) -> list[int]:
    """The ``count`` most relevant units of ``layer`` (see :func:`unit_relevance`), most relevant first."""
    relevance = unit_relevance(adapter, layer, inputs, target)
    count = min(count, relevance.numel())
    return torch.topk(relevance, count).indices.tolist()


def _layer_entry(adapter: ModelAdapter, layer: str | nn.Module) -> LayerInfo:
    entry = adapter.resolve_layer(layer)
    if entry.out_shape is None or len(entry.out_shape) < 1:
        raise LayerError(f"layer {entry.name!r} does not output one tensor with units along dimension 1")
    if entry.calls != 1:
        raise LayerError(
            f"layer {entry.name!r} runs {entry.calls} times per forward (a reused module), so switching its "
            "units is ambiguous; choose a layer that runs once"
        )
    return entry


def _state_values(
    spec: str | float | Tensor,
    observed: Tensor,
    units: Tensor,
    what: str,
) -> Tensor:
    """The on/off values of the chosen units, broadcastable to (inputs, units, *unit shape)."""
    chosen = observed[:, units]
    shape = chosen.shape
    if isinstance(spec, str):
        if spec == "observed" and what == "on":
            return chosen
        if spec == "mean":
            positive = chosen.clamp_min(0)
            count = (chosen > 0).sum(0)
            mean = positive.sum(0) / count.clamp_min(1)
            return mean.unsqueeze(0)
        accepted = "'observed', 'mean'" if what == "on" else "'mean'"
        raise InputError(f"{what} must be {accepted}, a number or a tensor, got {spec!r}")
    if isinstance(spec, bool):
        raise InputError(f"{what} must be a number or a tensor, not a bool")
    if isinstance(spec, (int, float)):
        return torch.full((1, *shape[1:]), float(spec), device=observed.device, dtype=observed.dtype)
    if isinstance(spec, Tensor):
        value = spec.to(observed.device, observed.dtype)
        n = shape[1]
        if value.ndim == 1 and value.numel() == n:
            return value.view(1, n, *([1] * (len(shape) - 2))).expand(1, *shape[1:])
        if tuple(value.shape) == tuple(shape[1:]):
            return value.unsqueeze(0)
        if tuple(value.shape) == tuple(shape):
            return value
        raise InputError(
            f"{what} as a tensor must have shape ({n},) (one value per unit), {tuple(shape[1:])} or "
            f"{tuple(shape)}, got {tuple(value.shape)}"
        )
    raise InputError(f"{what} must be a string, a number or a tensor, got {type(spec).__name__}")


class LayerFunction:
    """f(b) for a batch of unit states b (M×n, ±1): the network above ``layer`` with the units switched.

    The inputs pass the layers below once per call; the layer's hook returns an M·J batch (J inputs times
    M states), so only the part above the layer runs M·J times. A model whose later code does not follow
    that batch (a skip connection from below the layer) is detected on the first call by comparing with the
    plain route, which repeats the inputs M times, and then uses that route.
    """

    def __init__(
        self,
        adapter: ModelAdapter,
        layer: LayerInfo,
        inputs: Tensor,
        units: Sequence[int],
        targets: Tensor,
        kind: str,
        on: Tensor,
        off: Tensor,
    ) -> None:
        self.adapter, self.layer, self.inputs, self.targets, self.kind = adapter, layer, inputs, targets, kind
        self.units = torch.as_tensor(list(units), device=inputs.device, dtype=torch.long)
        self.on, self.off = on, off
        self.unit_shape = tuple(layer.out_shape[1:])
        per_row = max(1, int(torch.tensor(layer.out_shape).prod()))
        self.rows = max(inputs.shape[0], _ROW_ELEMENTS // per_row)
        self.chunk = max(1, self.rows // inputs.shape[0])  # unit states per forward of the upper network
        self.expand: bool | None = None
        self.forwards = 0
        self._states: Tensor | None = None

    def _replace(self, output: Tensor) -> Tensor:
        """The switched layer output for the current states: one ``where`` over an M×J×units batch.

        Every unit takes ``on_full`` where its state is +1 and ``off_full`` where it is −1; a unit that is
        not switched has its observed value in both, so its state (+1) does not matter.
        """
        if not isinstance(output, Tensor):
            raise LayerError(f"layer {self.layer.name!r} does not output a tensor")
        states = self._states
        m, j = states.shape[0], self.inputs.shape[0]
        if output.shape[0] == j and self.expand:
            observed = output
        elif output.shape[0] == m * j:
            observed = output.view(m, j, *output.shape[1:])[0]
        else:
            raise LayerError(
                f"layer {self.layer.name!r} saw a batch of {output.shape[0]}, expected {j} or {m * j}"
            )
        on_full, off_full = observed.clone(), observed.clone()
        on_full[:, self.units] = self.on.to(output)
        off_full[:, self.units] = self.off.to(output)
        switch = torch.ones(m, observed.shape[1], dtype=torch.bool, device=output.device)
        switch[:, self.units] = states > 0
        switch = switch.view(m, 1, observed.shape[1], *([1] * len(self.unit_shape)))
        return torch.where(switch, on_full, off_full).reshape(m * j, *output.shape[1:])

    def _logits(self, states: Tensor, expand: bool) -> Tensor:
        m, j = states.shape[0], self.inputs.shape[0]
        self._states, self.expand = states, expand
        x = self.inputs if expand else self.inputs.unsqueeze(0).expand(m, *self.inputs.shape).flatten(0, 1)
        logits = self.adapter.forward(x)
        if logits.ndim != 2 or logits.shape[0] != m * j:
            raise LayerError(
                f"the model returned logits of shape {tuple(logits.shape)} for {m * j} switched samples"
            )
        self.forwards += m * j
        return logits.view(m, j, -1)

    def _choose_route(self, states: Tensor) -> None:
        probe = states[:2]
        reference = self._logits(probe, expand=False)
        try:
            same = torch.allclose(self._logits(probe, expand=True), reference, rtol=1e-4, atol=1e-5)
        except (RuntimeError, LayerError):
            same = False
        self.expand = same

    def __call__(self, states: Tensor) -> Tensor:
        states = states.to(self.inputs.device)
        if self.expand is None:
            self._choose_route(states)
        values = [self._value(self._logits(part, self.expand)) for part in states.split(self.chunk)]
        return torch.cat(values)

    def _value(self, logits: Tensor) -> Tensor:
        targets = self.targets.view(1, -1).expand(logits.shape[0], -1)
        if self.kind == "indicator":
            value = torch.where(logits.argmax(-1) == targets, 1.0, -1.0)
        elif self.kind == "logit":
            value = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        else:
            value = logits.softmax(-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        return value.to(torch.float64).mean(1)


@contextlib.contextmanager
def switched(
    adapter: ModelAdapter,
    layer: str | nn.Module,
    inputs: Tensor,
    units: Sequence[int],
    *,
    target: Target = None,
    f: str = "indicator",
    on: str | float | Tensor = "observed",
    off: float | str | Tensor = 0.0,
):
    """Within the block, yields the batched function f(b) of ``units`` of ``layer`` (see the module doc).

    The model runs in eval behaviour with the switching hook installed; both are undone on exit.
    """
    if f not in FUNCTIONS:
        raise MethodError(f"unknown f {f!r}; use one of {', '.join(FUNCTIONS)}")
    x = adapter.prepare(inputs)
    entry = _layer_entry(adapter, layer)
    size = entry.out_shape[0]
    index = torch.as_tensor(list(units), dtype=torch.long)
    if index.numel() == 0 or index.ndim != 1:
        raise InputError("units must be a non-empty list of unit indices")
    if len(set(index.tolist())) != index.numel() or int(index.min()) < 0 or int(index.max()) >= size:
        raise InputError(
            f"units must be distinct indices in 0..{size - 1} of layer {entry.name!r}, got {units}"
        )
    with torch.no_grad(), adapter.evaluating():
        capture = adapter.capture(x, [entry.name], target, grads=False, maps=False)
        targets = (
            capture.target
            if capture.target is not None
            else adapter.resolve_target(target, logits=capture.logits)
        )
        observed = capture.acts[entry.name]
        device_index = index.to(observed.device)
        on_values = _state_values(on, observed, device_index, "on")
        off_values = _state_values(off, observed, device_index, "off")
        function = LayerFunction(adapter, entry, x, index.tolist(), targets, f, on_values, off_values)
        with adapter.replace_output(entry.name, function._replace):
            yield function


@gradients_enabled()
def spectroscopy(
    model: nn.Module | ModelAdapter,
    layer: str | nn.Module,
    units: Sequence[int] | None = None,
    *,
    inputs: Tensor,
    target: Target = None,
    f: str = "indicator",
    on: str | float | Tensor = "observed",
    off: float | str | Tensor = 0.0,
    method: str = "exact",
    n_units: int | None = None,
    tau: float | None = None,
    samples: int | None = None,
    max_order: int | None = None,
    seed: int = 0,
    block: int = 8,
    batch_size: int = 1 << 14,
    progress: Progress = None,
) -> Spectrum:
    """The Fourier spectrum of a layer's units as Boolean inputs of the network above (ActSpec).

    Unit i takes its **on** value where b_i = +1 and its **off** value where b_i = −1; the layer's other
    units keep their observed values, and f is computed by the rest of the network in eval behaviour.

    Args:
        model: a classifier or ModelAdapter; it is left exactly as it was (also its training flags).
        layer: the layer (name or module); units are along dimension 1 of its output (conv: channels).
        units: unit indices to switch; None picks the ``n_units`` most relevant by |activation × gradient|
            of the target logit over ``inputs``.
        inputs: model input, N×C×H×W (preprocessed); with N > 1, f is the mean over the N inputs.
        target: class index (or one per input); None: each input's predicted class.
        f: ``"indicator"`` (+1 when the model predicts the target, else −1), ``"logit"`` or ``"probability"``.
        on: ``"observed"`` (the unit's own value on each input: a unit silent on an input has no on/off
            difference there), ``"mean"`` (per element, the mean of its positive values over the inputs:
            the unit's typical firing), a number, or a tensor (per unit, or per unit and element).
        off: the value of a switched-off unit: a number (default 0, a silent ReLU), ``"mean"``, or a tensor.
        method: ``"exact"`` (all 2ⁿ states, n ≤ 24) or ``"search"`` (heavy coefficients, n in the hundreds).
        n_units: units picked when ``units`` is None: 16 for exact (capped by the layer), all for search.
        tau, samples, max_order, seed, block: search options (see :func:`~xai_widgets.actspec.fourier`).
        batch_size: unit states per evaluation batch (at most one forward of the upper network's memory budget).
        progress: ``progress(done, total)`` after every forward of the upper network, so a ``Cancelled`` it
            raises stops the work within one forward.

    Returns:
        A :class:`~xai_widgets.actspec.Spectrum` over the unit indices; ``options`` records the layer,
        units, target, f, on, off, the number of inputs and ``forwards`` (samples through the upper network).

    Example:
        >>> from xai_widgets import zoo
        >>> from xai_widgets.data.digits import load_digits
        >>> spectrum = spectroscopy(zoo.load("mnist-mlp-d20"), "relu", inputs=x[:8], target=3, n_units=12)
        >>> spectrum.order_weights()  # doctest: +SKIP
    """
    adapter = as_adapter(model)
    # prepare first: without an explicit input size the layer catalogue follows the inputs
    x = adapter.prepare(inputs)
    entry = _layer_entry(adapter, layer)
    if units is None:
        size = entry.out_shape[0]
        if n_units is None:
            n_units = min(16, size) if method == "exact" else size
        if isinstance(n_units, bool) or not isinstance(n_units, int) or n_units < 1:
            raise InputError(f"n_units must be a positive int, got {n_units!r}")
        units = (
            list(range(size)) if n_units >= size else select_units(adapter, entry.name, x, n_units, target)
        )
    units = [int(u) for u in units]
    with switched(adapter, entry.name, x, units, target=target, f=f, on=on, off=off) as function:
        spectrum = fourier(
            function,
            len(units),
            method,
            tau=tau,
            samples=samples,
            max_order=max_order,
            seed=seed,
            block=block,
            batch_size=min(batch_size, function.chunk),
            device=adapter.device,
            units=units,
            progress=progress,
        )
        targets = function.targets
    spectrum.options.update(
        layer=entry.name,
        units=tuple(units),
        target=int(targets[0]) if bool((targets == targets[0]).all()) else targets.tolist(),
        f=f,
        on=on if isinstance(on, (str, int, float)) else "tensor",
        off=off if isinstance(off, (str, int, float)) else "tensor",
        inputs=x.shape[0],
        forwards=function.forwards,
        route="expanded" if function.expand else "repeated",
    )
    return spectrum


_ELEMENTWISE = ("activation", "dropout", "norm", "flatten")


@gradients_enabled()
def unit_maps(
    model: nn.Module | ModelAdapter, layer: str | nn.Module, units: Sequence[int], image: Tensor
) -> Tensor:
    """Pictures of ``units`` of ``layer`` for showing a subset on the image: len(units) × h × w.

    - a conv layer: each channel's activation map on ``image`` (at the layer's resolution);
    - a flat layer fed by a Linear on the flattened input (through element-wise modules only, as in an
      MLP's fc1 → ReLU): the units' input weights, reshaped to the picture (channels summed);
    - another flat layer: the gradient of each unit with respect to the input on ``image`` (channels summed).
    """
    adapter = as_adapter(model)
    x = adapter.prepare(image)[:1]
    entry = _layer_entry(adapter, layer)
    index = [int(u) for u in units]
    if entry.spatial and (entry.layout is None or entry.layout.kind == "channels_first"):
        capture = adapter.capture(x, [entry.name], None, grads=False, maps=False)
        return capture.acts[entry.name][0, index].cpu()
    height, width = x.shape[-2:]
    catalogue = adapter.layers()
    position = catalogue.index(entry)
    while position >= 0 and catalogue[position].kind != "linear":
        if catalogue[position].kind not in _ELEMENTWISE:
            break
        position -= 1
    if position >= 0 and catalogue[position].kind == "linear":
        weight = catalogue[position].module.weight
        if weight.shape[1] == x[0].numel():
            return weight.detach()[index].view(len(index), *x.shape[1:]).sum(1).cpu()
    source = x.expand(len(index), *x.shape[1:]).clone().requires_grad_(True)
    kept: dict[str, Tensor] = {}

    def keep(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        kept["out"] = output

    with adapter.evaluating(), adapter.hooks(forward={entry.module: keep}), torch.enable_grad():
        adapter.forward(source)
        chosen = kept["out"].reshape(len(index), entry.out_shape[0], -1).sum(-1)
        (grad,) = torch.autograd.grad(chosen[torch.arange(len(index)), index].sum(), source)
    return grad.sum(1).detach().cpu().view(len(index), height, width)


@gradients_enabled()
def compare(
    models: Mapping[str, nn.Module | ModelAdapter],
    layer: str,
    *,
    inputs: Tensor,
    target: Target = None,
    progress: Progress = None,
    **options: Any,
) -> dict[str, Spectrum]:
    """The spectra of several models at the same layer, class and inputs (e.g. the zoo's dropout series).

    Units are picked per model (the same unit index means nothing across models); compare the order
    shares (:meth:`Spectrum.order_shares`) or :meth:`Spectrum.mean_order`.
    """
    result: dict[str, Spectrum] = {}
    names = list(models)
    for index, name in enumerate(names):
        step: Callable[[int, int], None] | None = None
        if progress is not None:

            def step(done: int, total: int, index: int = index) -> None:
                progress(index * total + done, len(names) * total)

        result[name] = spectroscopy(
            models[name], layer, inputs=inputs, target=target, progress=step, **options
        )
    return result
