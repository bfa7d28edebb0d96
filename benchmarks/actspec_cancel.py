"""How honest and stoppable is a long ActSpec search? Progress reports and the time a cancel takes.

The case of issue 17: the search over every unit of ``mnist-mlp-d20``'s hidden ReLU with f averaged over 64
digits (the widget's "over: inputs"), on one thread. A progress callback records when it is called and raises
``Cancelled`` once ``--after`` seconds have passed; printed: the reports, the longest gap between two of them,
the fraction shown when cancelled, and the time from the cancel request to the exception.

    python benchmarks/actspec_cancel.py [--after 5] [--inputs 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from xai_widgets import Cancelled, zoo
from xai_widgets.actspec import spectroscopy
from xai_widgets.data.digits import load_digits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=float, default=5.0, help="seconds before the cancel")
    parser.add_argument("--inputs", type=int, default=64, help="digits f is averaged over")
    args = parser.parse_args()
    torch.set_num_threads(1)
    adapter = zoo.load("mnist-mlp-d20", device="cpu")
    x = adapter.prepare(torch.as_tensor(load_digits().images[: args.inputs]).float())
    stamps: list[tuple[float, int, int]] = []
    start = time.perf_counter()
    deadline = start + args.after

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        stamps.append((now, done, total))
        if now >= deadline:
            raise Cancelled("benchmark cancel")

    try:
        spectroscopy(adapter, "relu", inputs=x, target=3, method="search", progress=progress)
        print(f"finished in {time.perf_counter() - start:.1f} s, before the cancel")
    except Cancelled:
        pass
    end = time.perf_counter()
    gaps = [b[0] - a[0] for a, b in zip(stamps, stamps[1:])]
    _, done, total = stamps[-1]
    print(
        f"{len(stamps)} reports, first after {stamps[0][0] - start:.2f} s, longest gap {max(gaps):.2f} s; "
        f"shown at the cancel: {done / total:.2%}; cancel took {end - deadline:.2f} s"
    )


if __name__ == "__main__":
    main()
