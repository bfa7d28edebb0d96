"""xai_widgets.methods.gating: the gate rule shared by LRP and DLBacktrace."""

import pytest
import torch

from xai_widgets.methods.gating import gate_multiply, gate_operands


def test_the_broadcast_operand_is_the_gate_and_a_marked_one_wins_on_equal_shapes():
    x, g = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 1, 1)
    signal, gate = gate_operands(g, x)
    assert signal is x and gate is g
    a, b = torch.rand(5), torch.rand(5)
    assert gate_operands(a, b) is None
    assert gate_operands(a, b, gates={id(a)}) == (b, a)


@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
def test_the_split_conserves_and_sends_share_to_the_gate(share):
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    g = torch.rand(2, 3, 1, 1, requires_grad=True)
    out = gate_multiply(x, g, share)
    torch.testing.assert_close(out, x * g)
    r = torch.rand_like(out)
    rx, rg = torch.autograd.grad(out, (x, g), r)
    torch.testing.assert_close(rx, (1 - share) * r)
    torch.testing.assert_close(rg, (share * r).sum((2, 3), keepdim=True))
    torch.testing.assert_close(rx.sum() + rg.sum(), r.sum())
    with pytest.raises(ValueError, match="share must lie in"):
        gate_multiply(x, g, 1.5)
