"""By-hand check: our LRP (CP-LRP in attention) on torchvision's vit_b_16 against the reference library lxt.

lxt is not a dependency, not even for tests: it pulls in transformers, accelerate, bitsandbytes and open_clip,
and its licence notice restricts LRP (a patented technology) to personal and scientific use. Install only its
code somewhere outside the environment and point this script at it:

    pip install --no-deps --target /tmp/lxtpkg lxt
    .venv/bin/python benchmarks/lxt_check.py --lxt /tmp/lxtpkg

lxt's "efficient" mode patches torchvision's GELU, LayerNorm and MultiheadAttention classes (globally, so this
runs in its own process) so that gradient × input equals LRP-0 with the identity rule on GELU, the standard
deviation of LayerNorm constant and the attention weights constant (CP-LRP). That is our ``lrp_epsilon`` with
``epsilon=0`` and ``attention='cp'``. Random weights (nothing is downloaded), the head re-initialised (torchvision
starts it at zero).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from functools import partial
from pathlib import Path

import torch
import torchvision

import xai_widgets as xw


def load_lxt_patches(root: Path) -> types.ModuleType:
    """lxt's efficient patches without its package __init__ (which imports transformers)."""
    for name in ("lxt", "lxt.efficient"):
        package = types.ModuleType(name)
        package.__path__ = [str(root / name.replace(".", "/"))]
        sys.modules[name] = package
    for name in ("rules", "patches"):
        full = f"lxt.efficient.{name}"
        spec = importlib.util.spec_from_file_location(full, root / "lxt" / "efficient" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[full] = module
        spec.loader.exec_module(module)
    return sys.modules["lxt.efficient.patches"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lxt", type=Path, required=True, help="folder where lxt was installed (--target)")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16().eval()
    torch.nn.init.normal_(model.heads.head.weight, std=0.02)
    x = torch.randn(2, 3, args.size, args.size)
    target = [3, 7]
    ours = xw.explain(model, x, target, "lrp_epsilon", epsilon=0.0, attention="cp").pixel

    patches = load_lxt_patches(args.lxt)
    vt = torchvision.models.vision_transformer
    cp_lrp = {
        vt.nn.GELU: partial(patches.patch_method, patches.non_linear_forward, keep_original=True),
        vt.nn.LayerNorm: partial(patches.patch_method, patches.layer_norm_forward),
        vt.nn.MultiheadAttention: partial(
            patches.patch_method, patches.cp_multi_head_attention_forward, keep_original=True
        ),
    }
    for cls, patch in cp_lrp.items():
        patch(cls)
    leaf = x.clone().requires_grad_(True)
    logits = model(leaf)
    score = logits.gather(1, torch.tensor(target).view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(score, leaf)
    theirs = leaf.detach() * grad
    ours_map, theirs_map = ours.sum(1).flatten(1), theirs.sum(1).flatten(1)
    rel = (ours - theirs).norm() / theirs.norm()
    corr = torch.stack([torch.corrcoef(torch.stack([a, b]))[0, 1] for a, b in zip(ours_map, theirs_map)])
    print(
        f"vit_b_16 {args.size}px, batch 2: relative L2 difference {rel:.2e}, per-image Pearson {corr.tolist()}"
    )
    print(
        f"sum of relevance: ours {ours.flatten(1).sum(1).tolist()}, lxt {theirs.flatten(1).sum(1).tolist()}"
    )


if __name__ == "__main__":
    main()
