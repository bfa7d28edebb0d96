"""xai_widgets.methods.intercept: the one mechanism for operations that are not modules.

The module stack names where an operation runs (no frames, no bytecode); in-place calls keep the program's
meaning whether or not it keeps their result; a bare in-place change of a rule's output that the program then
relies on raises instead of computing a wrong value; modified backprop refuses activations it is not defined for.
"""

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import xai_widgets as xw
from xai_widgets.methods import canonizers, intercept
from xai_widgets.methods.intercept import ModuleStack, OpRules


class Inner(nn.Module):
    def forward(self, x):
        return torch.relu(x) * 2


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = Inner()

    def forward(self, x):
        return self.inner(x) + 1


def test_module_stack_names_the_innermost_module_and_empties_after_an_error():
    model = Outer()
    seen = []

    def relu(call):
        seen.append((type(call.module).__name__, call.name, call.where()))
        return NotImplemented

    x = torch.randn(3, requires_grad=True)
    with ModuleStack(model) as stack, OpRules({torch.relu: relu}, stack=stack):
        out = model(x)
    assert seen == [("Inner", "inner", "the module Inner ('inner')")]
    torch.testing.assert_close(out, torch.relu(x) * 2 + 1)
    hooks = [m._forward_hooks for m in model.modules()] + [m._forward_pre_hooks for m in model.modules()]
    assert all(len(h) == 0 for h in hooks)

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model.inner = Boom()
    with ModuleStack(model) as stack:
        with pytest.raises(RuntimeError, match="boom"):
            model(x)
        assert stack.current() == (None, None)


def test_no_frame_or_bytecode_reading():
    for module in (intercept, canonizers):
        source = inspect.getsource(module)
        for word in ("_getframe", "f_lasti", "import dis", "f_locals"):
            assert word not in source, f"{module.__name__} uses {word}"


def _double_relu(call):
    """A handler whose result differs from the op's, to see which value the program continues with."""
    return call.finish(torch.relu(call.args[0]) * 2)


class BareInPlace(nn.Module):
    """An in-place ReLU whose result is dropped: the program relies on the tensor being changed."""

    def forward(self, x):
        y = x * 1.0
        y.relu_()
        return y + 0


class AssignedInPlace(nn.Module):
    def forward(self, x):
        y = x * 1.0
        y = F.relu(y, inplace=True)
        return y + 0


@pytest.mark.parametrize("model", [BareInPlace(), AssignedInPlace()])
def test_in_place_calls_keep_the_programs_meaning(model):
    x = torch.randn(2, 5, requires_grad=True)
    handlers = {Tensor.relu_: _double_relu, F.relu: _double_relu, torch.relu_: _double_relu}
    with ModuleStack(model) as stack, OpRules(handlers, stack=stack):
        out = model(x)
    torch.testing.assert_close(out, torch.relu(x) * 2)
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, 2.0 * (x > 0))  # the handler's backward, not the original op's


class KeepsOldValue(nn.Module):
    """A bare in-place add on a conv output (an LRP rule's output) that the program then reads."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3, 2)

    def forward(self, x):
        y = self.conv(x)
        z = self.conv(x)
        y.add_(z)
        return self.fc(y.mean((2, 3)))


class KeepsResult(KeepsOldValue):
    def forward(self, x):
        y = self.conv(x)
        y += self.conv(x)
        return self.fc(y.mean((2, 3)))


def test_a_rules_output_changed_in_place_and_reused_raises_while_augmented_assignment_works(guard):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    model = KeepsOldValue().eval()
    with guard(model), pytest.raises(xw.UnsupportedModelError, match=r"KeepsOldValue.*in-place add_"):
        xw.explain(model, x, 0, "lrp_epsilon", epsilon=0.0)
    model = KeepsResult().eval()
    with torch.no_grad():
        model.conv.bias.zero_()
        model.fc.bias.zero_()
    with guard(model):
        e = xw.explain(model, x, [0, 1], "lrp_epsilon", epsilon=0.0)
    torch.testing.assert_close(e.pixel.flatten(1).sum(1), e.score, rtol=1e-4, atol=1e-6)


class GeluNet(nn.Module):
    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.conv, self.act, self.fc = nn.Conv2d(3, 4, 3), nn.GELU(), nn.Linear(4, 3)

    def forward(self, x):
        x = self.conv(x)
        x = F.silu(x) if self.functional else self.act(x)
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet", "rectgrad"])
@pytest.mark.parametrize(("functional", "pattern"), [(False, r"GELU \('act'\)"), (True, r"GeluNet.*silu")])
def test_modified_backprop_refuses_activations_it_is_not_defined_for(method, functional, pattern, guard):
    model = GeluNet(functional).eval()
    with guard(model), pytest.raises(xw.UnsupportedModelError, match=pattern):
        xw.explain(model, torch.randn(1, 3, 8, 8), 0, method)
