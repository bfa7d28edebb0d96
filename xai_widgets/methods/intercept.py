"""The one mechanism for operations that are not modules (DESIGN 2.1).

Rules that live on modules are forward hooks (:meth:`ModelAdapter.rules`). Everything else a forward does with
tensors — ``F.relu``, ``out += identity``, ``torch.cat``, ``x.mean()``, ``q @ k.transpose(-2, -1)``, ``x * gate`` —
is reached here, at run time, by a :class:`~torch.overrides.TorchFunctionMode` that hands each call of a chosen
function to a handler. A handler may return a result computed out of place with a custom autograd function
whose backward is its rule. Modified backprop, LRP, DLBacktrace, the activation-maximization backward slope and
the transformer rules all attach here.

Which module an operation runs in comes from :class:`ModuleStack`, forward pre/post hooks on every submodule for
the duration of one call, never from Python frames or bytecode, so it works the same on every interpreter and on
any eager model. While a module's hooks run (rule machinery, not model code) nothing is intercepted.

In-place calls (``x.relu_()``, ``F.relu(x, inplace=True)``, ``a.add_(b)``, ``a += b``) are handled uniformly: the
handler sees a clone of the tensor being modified, and :meth:`OpCall.finish` copies its out-of-place result back
into the tensor the program holds. The program then sees exactly what it would have seen (also through other
references to that tensor, whether or not it keeps the call's result), and the copy's backward sends the whole
gradient to the handler's result, so the rule owns the backward. Autograd forbids that copy into the output of a
custom autograd function that returned its input (every rule's output is one): then the result is returned
instead, the old tensor is marked stale, and any later use of it by the model raises UnsupportedModelError (the
program relied on the in-place change without keeping the result) rather than computing a silently wrong value.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ..errors import UnsupportedModelError

Handler = Callable[["OpCall"], Any]


@dataclass
class _Frame:
    module: nn.Module
    name: str
    in_hooks: bool = True


class ModuleStack:
    """Which of the model's modules is running: forward pre/post hooks on every submodule, within a ``with``.

    ``current()`` is the innermost running module and its qualified name (``""`` for the model itself);
    ``in_hooks`` is True while that module's forward hooks or pre-hooks run (rule machinery). The hooks are
    removed on exit, also after an exception; the post hook is ``always_call`` so a forward that raises leaves
    the stack consistent.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._frames: list[_Frame] = []
        self._handles: list[Any] = []

    def __enter__(self) -> ModuleStack:
        try:
            for name, module in self.model.named_modules():
                self._handles += [
                    module.register_forward_pre_hook(functools.partial(self._push, name), prepend=True),
                    module.register_forward_pre_hook(self._body),
                    module.register_forward_hook(self._hooks, prepend=True),
                    module.register_forward_hook(self._pop, always_call=True),
                ]
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._frames.clear()

    def _push(self, name: str, module: nn.Module, inputs: tuple) -> None:
        self._frames.append(_Frame(module, name))

    def _body(self, module: nn.Module, inputs: tuple) -> None:
        if self._frames and self._frames[-1].module is module:
            self._frames[-1].in_hooks = False

    def _hooks(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        if self._frames and self._frames[-1].module is module:
            self._frames[-1].in_hooks = True

    def _pop(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        if self._frames and self._frames[-1].module is module:
            self._frames.pop()

    @property
    def in_hooks(self) -> bool:
        return bool(self._frames) and self._frames[-1].in_hooks

    def current(self) -> tuple[nn.Module | None, str | None]:
        """The innermost module of the model whose forward is running, and its qualified name."""
        if not self._frames:
            return None, None
        frame = self._frames[-1]
        return frame.module, frame.name

    def where(self) -> str:
        """Words for error messages: ``the module ReLU ('layer1.0.relu')``."""
        module, name = self.current()
        if module is None:
            return "an operation outside the model's modules"
        return f"the module {type(module).__name__} ({repr(name) if name else 'the model itself'})"


@dataclass
class OpCall:
    """One intercepted call: the function, its arguments, where it runs, and whether it is in place.

    For an in-place call ``args[0]`` is already a clone of the tensor the program modifies; return
    :meth:`finish` of the out-of-place result.
    """

    func: Any
    args: tuple
    kwargs: dict
    module: nn.Module | None
    name: str | None
    stack: ModuleStack | None
    inplace: bool = False
    _target: Tensor | None = field(default=None, repr=False)
    _mode: OpRules | None = field(default=None, repr=False)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """The original operation, out of place, on ``args`` (default: the call's own arguments)."""
        args = args or self.args
        kwargs = {**self.kwargs, **kwargs}
        func = self.func
        if self.inplace:
            func, kwargs = _out_of_place(func, kwargs)
        return func(*args, **kwargs)

    def finish(self, out: Tensor) -> Tensor:
        """The value to hand back to the program: ``out``, written into the modified tensor for in-place calls."""
        target = self._target
        if not self.inplace or target is None:
            return out
        if not target._is_view() and not (target.is_leaf and target.requires_grad):
            return target.copy_(out)
        if self._mode is not None:
            self._mode.stale[id(target)] = (target, self)
        return out

    def where(self) -> str:
        if self.stack is None:
            return "an operation in the model's forward"
        module, name = self.module, self.name
        if module is None:
            return "an operation outside the model's modules"
        return f"the module {type(module).__name__} ({repr(name) if name else 'the model itself'})"


class OpRules(TorchFunctionMode):
    """Hand calls of chosen torch functions to handlers during a forward.

    Args:
        handlers: ``{function: handler}``; keys are torch functions or ``Tensor`` methods (``F.relu``,
            ``torch.add``, ``Tensor.__iadd__``, …). A handler returns the call's result, or ``NotImplemented`` to
            run the operation unchanged.
        stack: the :class:`ModuleStack` of the model (its ``current()`` fills :attr:`OpCall.module`); calls made
            while a module's hooks run are not intercepted.
        observe: optional ``observe(func, args, kwargs)`` called for every other operation of the model's code
            (e.g. to count the uses of a rule's output).

    Only calls made with gradients enabled are intercepted; calls made inside a handler are not re-intercepted
    (the mode is off while its handler runs).
    """

    def __init__(
        self,
        handlers: Mapping[Any, Handler],
        stack: ModuleStack | None = None,
        observe: Callable[[Any, tuple, dict], None] | None = None,
    ) -> None:
        super().__init__()
        self.handlers = dict(handlers)
        self.stack = stack
        self.observe = observe
        self.stale: dict[int, tuple[Tensor, OpCall]] = {}

    def __exit__(self, *exc: Any) -> Any:
        self.stale.clear()
        return super().__exit__(*exc)

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if not torch.is_grad_enabled() or (self.stack is not None and self.stack.in_hooks):
            return func(*args, **kwargs)
        if self.stale and not metadata(func):
            self._check_stale(args, kwargs)
        if self.observe is not None and not metadata(func):
            self.observe(func, args, kwargs)
        handler = self.handlers.get(func)
        inplace = is_inplace(func, args, kwargs)
        if handler is None:
            if inplace and args and _rule_output(args[0]):
                handler = _run_out_of_place
            else:
                return func(*args, **kwargs)
        module, name = self.stack.current() if self.stack is not None else (None, None)
        target = None
        if inplace and args and isinstance(args[0], Tensor):
            target = args[0]
            args = (target.clone(), *args[1:])
        call = OpCall(func, args, kwargs, module, name, self.stack, inplace, target, self)
        result = handler(call)
        if result is NotImplemented:
            if target is not None and _rule_output(target):
                return _run_out_of_place(call)
            if target is not None:
                args = (target, *args[1:])
            return func(*args, **kwargs)
        return result

    def check_output(self, output: Any) -> None:
        """Raise if the model returned a tensor that an intercepted in-place call left stale."""
        if self.stale:
            self._check_stale((output,), {})

    def _check_stale(self, args: tuple, kwargs: dict) -> None:
        for tensor in tensors(args, kwargs):
            hit = self.stale.get(id(tensor))
            if hit is not None and hit[0] is tensor:
                call = hit[1]
                raise UnsupportedModelError(
                    f"{call.where()} modifies a layer output in place (an in-place "
                    f"{getattr(call.func, '__name__', call.func)}) and then uses the old tensor, which a rule's "
                    "output cannot follow; write x = f(x) or x += y instead of a bare in-place call"
                )


_METADATA = {
    Tensor.dim,
    Tensor.size,
    Tensor.numel,
    Tensor.stride,
    Tensor.detach,
    Tensor.is_contiguous,
    Tensor.is_floating_point,
    Tensor.data_ptr,
    Tensor.element_size,
}


def metadata(func: Any) -> bool:
    """Operations that only read a tensor's metadata or cut it from the graph: no signal flows there."""
    return func in _METADATA or getattr(func, "__name__", "") == "__get__"


def _rule_output(tensor: Any) -> bool:
    """An output of a custom autograd function that returned its input: autograd forbids changing it in place."""
    return (
        isinstance(tensor, Tensor)
        and tensor._is_view()
        and isinstance(tensor.grad_fn, torch.autograd.function.BackwardCFunction)
    )


def _run_out_of_place(call: OpCall) -> Any:
    return call.finish(call.run())


def is_inplace(func: Any, args: tuple, kwargs: dict) -> bool:
    """True for calls that modify their first argument: ``x.add_()``, ``a += b``, ``F.relu(x, inplace=True)``."""
    name = getattr(func, "__name__", "")
    if name.startswith("__i") and name.endswith("__") and name not in ("__init__", "__index__", "__int__"):
        return True
    if name.endswith("_") and not name.endswith("__"):
        return True
    position = _inplace_position(func)
    if position is None:
        return False
    if "inplace" in kwargs:
        return bool(kwargs["inplace"])
    return len(args) > position and bool(args[position])


@functools.cache
def _inplace_position(func: Any) -> int | None:
    """The position of an ``inplace`` parameter of a Python-level function (``F.relu``), else None."""
    try:
        parameters = list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None
    return parameters.index("inplace") if "inplace" in parameters else None


def _out_of_place(func: Any, kwargs: dict) -> tuple[Any, dict]:
    """The out-of-place twin of an in-place call: ``Tensor.add_`` → ``Tensor.add``, ``__iadd__`` → ``__add__``,
    ``F.relu(…, inplace=True)`` → ``F.relu(…, inplace=False)``."""
    if _inplace_position(func) is not None:
        return func, {**kwargs, "inplace": False}
    name = func.__name__
    twin = "__" + name[3:] if name.startswith("__i") else name[:-1]
    owner = Tensor if hasattr(Tensor, name) and getattr(Tensor, name) is func else torch
    return getattr(owner, twin), kwargs


def tensors(args: tuple, kwargs: Mapping[str, Any] | None = None) -> Iterator[Tensor]:
    """Every tensor among an operation's arguments, also inside lists and tuples (``torch.cat``)."""
    for value in (*args, *(kwargs or {}).values()):
        if isinstance(value, Tensor):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from tensors(tuple(value))
