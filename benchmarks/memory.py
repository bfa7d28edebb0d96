"""Benchmark: peak process memory of Integrated Gradients with the default chunk (issue: 256 rows per pass).

resnet50 (random weights), 224×224, batch 2, 64 steps: 128 rows to evaluate. Each case runs in a fresh Python
subprocess on the CPU, which reports its own peak resident set size (``ru_maxrss``), so cases do not share
allocator state:

- ``model``: imports and the model alone (the fixed cost);
- ``forward``: one forward of the batch without gradients;
- ``ig default``: ``explain(..., "integrated_gradients", steps=64)``, whose chunk comes from
  ``gradient.default_rows`` (a 2 GiB activation budget over the catalogue's per-row estimate);
- ``ig rows=N``: the same with ``batch_size=N`` (``--rows N``; ``--rows 128`` is the previous default, about
  12 GB: run it only where that much memory is free).

Run: ``python benchmarks/memory.py [--rows 16 128]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, time, torch, torchvision
import xai_widgets as xw
from xai_widgets.methods import gradient
torch.manual_seed(0)
model = torchvision.models.resnet50().eval()
x = torch.randn(2, 3, 224, 224)
case, rows = {case!r}, {rows!r}
adapter = xw.ModelAdapter(model)
adapter.prepare(x)
chosen = gradient.default_rows(adapter, x)
start = time.perf_counter()
if case == "forward":
    with torch.no_grad():
        model(x)
elif case == "ig":
    xw.explain(adapter, x, 0, "integrated_gradients", steps=64, batch_size=rows)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux -> GiB
print(json.dumps({{"peak_gib": peak, "seconds": seconds, "default_rows": chosen}}))
"""


def run(case: str, rows: int | None) -> dict:
    code = CHILD.format(case=case, rows=rows)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, nargs="*", default=[], help="explicit batch_size cases")
    args = parser.parse_args()
    cases = [("model", "model", None), ("forward", "forward", None), ("ig default", "ig", None)]
    cases += [(f"ig rows={n}", "ig", n) for n in args.rows]
    print("| case | rows per pass | peak RSS (GiB) | time (s) |")
    print("|---|---|---|---|")
    for label, case, rows in cases:
        result = run(case, rows)
        shown = rows or result["default_rows"] if case == "ig" else "-"
        print(f"| {label} | {shown} | {result['peak_gib']:.2f} | {result['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
