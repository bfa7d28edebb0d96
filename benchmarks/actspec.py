"""Activation Spectroscopy benchmark on the zoo's ``mnist-mlp-d20`` (hidden layer ``relu``, 256 units).

- exact mode: all 2ⁿ on/off states of the n = 16 and n = 20 most relevant hidden units, f the class
  indicator (+1 when the model predicts the class) averaged over test digits of that class;
- search mode over all 256 hidden units: the same indicator at τ = ``--tau``, and the class logit of one
  digit at the default τ (0.2 × its standard deviation), whose heavy coefficients are checked against
  their exact values (the logit is linear in the units: f̂({i}) = w_ci·h_i / 2 with on = h_i, off = 0).

Every evaluation of f runs the network above the layer once per digit ("forwards"). Times are wall
seconds of one run after a warm-up (and the process's CPU seconds), on the CPU and, when available, CUDA.

Run: ``python benchmarks/actspec.py [--device cpu|cuda|all] [--inputs 8] [--digit 3] [--tau 0.2]``
"""

from __future__ import annotations

import argparse
import time

import torch

from xai_widgets import zoo
from xai_widgets.actspec import spectroscopy
from xai_widgets.data.digits import load_digits


def timed(device: torch.device, fn):
    """fn() with its wall seconds and the process's CPU seconds (the CPU time shows contention on a shared host)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start, time.process_time() - cpu


def run(device: torch.device, inputs: int, digit: int, tau: float) -> list[dict]:
    adapter = zoo.load("mnist-mlp-d20", device=device)
    digits = load_digits("mnist", size=14, split="test")
    x = adapter.preprocess(digits.images[digits.labels == digit][:inputs])
    spectroscopy(adapter, "relu", inputs=x, target=digit, n_units=8)  # warm-up (kernels, allocator)
    indicator = {"inputs": x, "target": digit, "f": "indicator"}
    logit = {"inputs": x[:1], "target": digit, "f": "logit"}
    cases = [
        ("exact", 16, indicator),
        ("exact", 20, indicator),
        ("search", 256, {**indicator, "tau": tau}),
        ("search", 256, logit),
    ]
    rows = []
    for method, n, options in cases:

        def compute(method: str = method, n: int = n, options: dict = options):
            return spectroscopy(adapter, "relu", method=method, n_units=n, **options)

        spectrum, seconds, cpu_seconds = timed(device, compute)
        rows.append(
            {
                "device": device.type,
                "mode": method,
                "f": options["f"],
                "units": n,
                "inputs": options["inputs"].shape[0],
                "evaluations": spectrum.evaluations,
                "forwards": spectrum.options["forwards"],
                "seconds": seconds,
                "cpu seconds": cpu_seconds,
                "coefficients": len(spectrum.coefficients),
                "mean order": spectrum.mean_order(),
                "explained": spectrum.explained,
                "samples": spectrum.options.get("samples", ""),
            }
        )
        print(format_row(rows[-1]), flush=True)
        if options["f"] == "logit":
            print("  heavy units vs exact w·h/2:", check_linear(adapter, x[:1], digit, spectrum), flush=True)
    return rows


def check_linear(adapter, x: torch.Tensor, digit: int, spectrum) -> str:
    """Largest |found − exact| over the reported units, and whether each exact value lies in its interval."""
    hidden = adapter.capture(x, ["relu"], digit, grads=False).acts["relu"][0]
    exact = adapter.model.fc2.weight[digit].detach() * hidden / 2
    found = [(s[0], v) for s, v in spectrum.coefficients if len(s) == 1]
    error = max((abs(v - float(exact[u])) for u, v in found), default=0.0)
    inside = sum(
        spectrum.interval((u,))[0] <= float(exact[u]) <= spectrum.interval((u,))[1] for u, _ in found
    )
    missed = [
        int(u)
        for u in torch.nonzero(exact.abs() >= spectrum.options["tau"]).flatten()
        if (int(u),) not in dict(spectrum.coefficients)
    ]
    return f"{len(found)} units, max error {error:.4f}, {inside}/{len(found)} in their 95% interval, missed {missed}"


HEADER = (
    f"{'device':<6} {'mode':<6} {'f':<9} {'units':>5} {'inputs':>6} {'evaluations':>12} {'forwards':>12} {'seconds':>8} "
    f"{'cpu s':>8} {'fwd/s':>10} {'coefs':>7} {'mean k':>6} {'explained':>9} {'samples':>8}"
)


def format_row(row: dict) -> str:
    return (
        f"{row['device']:<6} {row['mode']:<6} {row['f']:<9} {row['units']:>5} {row['inputs']:>6} {row['evaluations']:>12,} "
        f"{row['forwards']:>12,} {row['seconds']:>8.2f} {row['cpu seconds']:>8.2f} "
        f"{row['forwards'] / row['seconds']:>10.3g} "
        f"{row['coefficients']:>7} {row['mean order']:>6.2f} {row['explained']:>9.3f} {row['samples']!s:>8}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    parser.add_argument("--inputs", type=int, default=8, help="test digits f is averaged over")
    parser.add_argument("--digit", type=int, default=3, help="the class of the indicator")
    parser.add_argument("--tau", type=float, default=0.1, help="search threshold on |f̂| for the indicator")
    args = parser.parse_args()
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        print("CUDA is not available: CPU only")
        devices.remove("cuda")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print(HEADER)
    for device in devices:
        run(torch.device(device), args.inputs, args.digit, args.tau)


if __name__ == "__main__":
    main()
