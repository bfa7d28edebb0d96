"""Benchmark: dataset-scale evaluation (``xai_widgets.evaluate``) and the batched ROAD imputation.

Part 1, imputation (``--part imputation``): ybROAD of Grad-CAM maps for a batch of pictures at 224×224 on
torchvision's resnet18 (and DenseNet-121 with ``--densenet``), random weights (nothing is downloaded): MoRF
and LeRF at 20/40/60/80% = 8 imputed images per picture, with the exact sparse LU (``solver="direct"``) and
with the batched multigrid-preconditioned CG (``solver="cg"``), next to the forwards of the same imputed
images alone. The goal: ybROAD ≤ 1.5× those forwards (the imputation at most half their cost). The target
class is given, as CAManim gives it (without one, ybROAD first forwards the clean pictures to find it).

Part 2, executors (``--part executors``): ``N`` shapes images (default 2,000, 64×64) on the shipped
``shapes-resnet`` × gradcam, lrp_composite, saliency (and backtrace where registered) × ROAD and the
pointing game: in-process, then Dask with 1 and with 2 worker processes (the cluster started before the
clock: a warm cluster; its start time is reported apart). Every run writes no shards; results of all
executors are compared (max relative difference). Also prints the per-image costs used to extrapolate to
ImageNet's 50,000 validation images on a 4-GPU Dask cluster.

Run: ``python benchmarks/evaluate.py [--part imputation|executors|all] [--images 2000] [--ray]``; set
``OMP_NUM_THREADS=1`` on a shared machine (oversubscribed OpenMP threads make every op wait on barriers).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import xai_widgets as xw
from xai_widgets.metrics.road import ybroad


def _clock(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def imputation(name: str, pictures: int, threads: int, rounds: int = 5) -> None:
    import torchvision

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    adapter = xw.ModelAdapter(model, input_size=(3, 224, 224), name=name)
    x = torch.randn(pictures, 3, 224, 224)
    with torch.no_grad():
        target = adapter.forward(x).argmax(1)  # the class the maps explain, passed on as CAManim does
    maps = xw.explain(adapter, x, target=target, method="gradcam").attribution
    images = x.repeat(8, 1, 1, 1)  # the 8 imputed images per picture, forwarded alone

    def forwards() -> None:
        with torch.no_grad():
            for start in range(0, len(images), 16):
                adapter.forward(images[start : start + 16])

    ybroad(adapter, x, maps, target, solver="cg", batch_size=16)  # warm-up
    direct = _clock(lambda: ybroad(adapter, x, maps, target, solver="direct", batch_size=16))
    floors, ratios = [], []
    for _ in range(rounds):  # paired: the forwards timed right before each ybROAD run
        floors.append(_clock(forwards))
        seconds = _clock(lambda: ybroad(adapter, x, maps, target, solver="cg", batch_size=16))
        ratios.append(seconds / floors[-1])
    floor = statistics.median(floors)
    print(f"\n{name}, {pictures} pictures at 224×224 ({8 * pictures} imputed images), {threads} threads")
    print(f"  {'forwards of the imputed images':34s} {floor:7.2f} s   (median of {rounds})")
    print(f"  {'ybROAD, direct':34s} {direct:7.2f} s   {direct / floor:5.2f}× forwards")
    print(
        f"  {'ybROAD, cg':34s} {statistics.median(ratios) * floor:7.2f} s   {statistics.median(ratios):5.2f}× "
        f"forwards (paired ratios: {', '.join(f'{r:.2f}' for r in sorted(ratios))})"
    )


def executors(n: int, batch_size: int, threads: int | None, ray: bool = False) -> None:
    from xai_widgets.evaluation import DaskExecutor, evaluate

    methods = ["gradcam", "lrp_composite", "saliency"]
    if "backtrace" in [m.name for m in xw.methods()]:
        methods.append("backtrace")
    metrics = ["road", "pointing_game"]
    data = f"shapes:{n}"
    cores = os.cpu_count() or 1
    print(
        f"\n{n} shapes images × {', '.join(methods)} × ROAD + pointing game, batch {batch_size}, {cores} cores, {threads or cores} torch thread(s) per process"
    )
    threads = threads or cores
    torch.set_num_threads(threads)
    start = time.perf_counter()
    reference = evaluate("shapes-resnet", data, methods, metrics, batch_size=batch_size)
    times = {"in-process": time.perf_counter() - start}
    for workers in (1, 2):
        started = time.perf_counter()
        with DaskExecutor(n_workers=workers, threads=min(threads, cores // workers) or 1) as executor:
            executor.client.run(lambda: __import__("xai_widgets.evaluation.runner"))  # warm imports
            print(
                f"  Dask LocalCluster with {workers} worker(s) started in {time.perf_counter() - started:.1f} s"
            )
            start = time.perf_counter()
            result = evaluate(
                "shapes-resnet", data, methods, metrics, batch_size=batch_size, executor=executor
            )
            times[f"Dask, {workers} worker(s)"] = time.perf_counter() - start
        a = reference.table.sort_values(["method", "index", "metric"])["value"].to_numpy()
        b = result.table.sort_values(["method", "index", "metric"])["value"].to_numpy()
        rel = abs(a - b) / abs(a).clip(min=1e-12)
        print(f"  max relative difference to in-process: {rel.max():.2e}")
    if ray:
        from xai_widgets.evaluation import RayExecutor

        started = time.perf_counter()
        executor = RayExecutor(concurrency=2)  # the Ray runtime up before the clock: "warm"
        print(f"  Ray runtime started in {time.perf_counter() - started:.1f} s (2 actors per run)")
        start = time.perf_counter()
        result = evaluate("shapes-resnet", data, methods, metrics, batch_size=batch_size, executor=executor)
        times["Ray, 2 actors"] = time.perf_counter() - start
        a = reference.table.sort_values(["method", "index", "metric"])["value"].to_numpy()
        b = result.table.sort_values(["method", "index", "metric"])["value"].to_numpy()
        print(
            f"  Ray: max relative difference to in-process: {(abs(a - b) / abs(a).clip(min=1e-12)).max():.2e}"
        )
    for label, seconds in times.items():
        print(f"  {label:24s} {seconds:8.1f} s   {1000 * seconds / n:7.1f} ms/image")
    if ray:
        print(f"  Ray 2 actors / Dask 2 workers: {times['Ray, 2 actors'] / times['Dask, 2 worker(s)']:.2f}")
    print(f"  Dask 1 worker / in-process: {times['Dask, 1 worker(s)'] / times['in-process']:.2f}")
    print(f"  Dask 1 worker / 2 workers:  {times['Dask, 1 worker(s)'] / times['Dask, 2 worker(s)']:.2f}")
    print(reference.summary[~reference.summary["metric"].str.contains("@")].to_string(index=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("imputation", "executors", "all"), default="all")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--pictures", type=int, default=8, help="224 px pictures in the imputation part")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--densenet", action="store_true", help="also DenseNet-121 in the imputation part")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (0: cores)")
    parser.add_argument("--ray", action="store_true", help="also Ray (2 actors) in the executors part")
    parser.add_argument("--rounds", type=int, default=5, help="paired timing rounds in the imputation part")
    args = parser.parse_args()
    if args.part in ("imputation", "all"):
        imputation("resnet18", args.pictures, args.threads, args.rounds)
        if args.densenet:
            imputation("densenet121", args.pictures, args.threads, args.rounds)
    if args.part in ("executors", "all"):
        executors(args.images, args.batch_size, args.threads, args.ray)


if __name__ == "__main__":
    main()
