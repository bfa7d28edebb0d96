"""Where the shards of an evaluation run: in this process, on Dask, or on Ray (optional).

One code path for all of them: every executor calls the same shard function (``runner.run_shard``) with the
same arguments; only the transport differs. The model never travels as a pickled module with hooks: it
travels as a :class:`ModelSpec` (a zoo name, or a factory plus a state dict and the adapter's
preprocessing), and each worker process builds it once and keeps it in a cache keyed by the weights'
fingerprint.

- :class:`InProcessExecutor` (``executor=None``): a loop in the calling process, on the caller's model.
- :class:`DaskExecutor` (``executor="dask"`` or a ``distributed.Client``): a ``distributed.LocalCluster``
  with ``n_workers`` processes, one thread each, started by ``spawn`` (CUDA does not survive ``fork``), with
  torch's thread count set to cores ÷ workers in every task; or the user's own client, whose cluster may
  span machines. With CUDA GPUs present and ``dask_cuda`` installed, ``"dask"`` starts a
  ``dask_cuda.LocalCUDACluster`` instead (one worker per GPU; ``CUDA_VISIBLE_DEVICES`` gives each its GPU).
  Dask's nanny writes ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
  ``MALLOC_TRIM_THRESHOLD_`` into the environment of the process that starts it (its "pre-spawn
  environment"), and ``PYTHONHASHSEED``; here the thread variables reach only the workers (through the
  nanny's ``env``), and those variables of the caller's ``os.environ`` are put back after the cluster starts
  and after every finished shard (a worker restarted after a crash triggers the nanny again).
- :class:`RayExecutor` (``executor="ray"``, the optional ``ray`` extra): Ray Data ``map_batches`` over a
  callable class, so each actor builds the model once; usage statistics are switched off.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import XAIError
from ..model import ModelAdapter, as_adapter

# what Dask's nanny puts into the environment of the process that starts it (distributed.yaml)
DASK_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")
# ... and the nanny also sets PYTHONHASHSEED there before spawning a worker, distributed.proctitle a marker
GUARDED_ENV = (*DASK_ENV, "PYTHONHASHSEED", "__DASK_PARENT_PID")

# one built model per fingerprint and process (a worker keeps it across tasks)
_ADAPTERS: dict[str, ModelAdapter] = {}


def fingerprint(model: nn.Module) -> str:
    """SHA-1 of a module's state dict (names, dtypes, shapes and bytes): the weights' identity."""
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class ModelSpec:
    """How a worker builds the model: a zoo ``name``, or ``factory()`` plus ``state_dict``, with the adapter's
    preprocessing (``adapter``: ModelAdapter keyword arguments such as mean, std, labels, input_size).

    ``ModelSpec.of(model)`` makes one from a zoo name, a ModelAdapter or an ``nn.Module``; the model itself
    (``local``) is used in this process and never pickled.
    """

    zoo: str | None = None
    factory: Callable[[], nn.Module] | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    adapter: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    local: ModelAdapter | None = field(default=None, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["local"] = None
        return state

    @classmethod
    def of(cls, model: Any, factory: Callable[[], nn.Module] | None = None) -> ModelSpec:
        """A spec for a zoo name, a ModelSpec, a ModelAdapter or an ``nn.Module``.

        For a module without ``factory``, its class is the factory when it builds without arguments and its
        state dict fits (a user's own ``nn.Module`` subclass usually does); otherwise give ``factory``.
        """
        if isinstance(model, ModelSpec):
            return model
        if isinstance(model, str):
            from .. import zoo

            if model not in zoo.names():
                raise XAIError(f"unknown zoo model {model!r}; known: {', '.join(zoo.names())}")
            local = zoo.load(model)
            return cls(zoo=model, fingerprint=fingerprint(local.model), local=local)
        if not isinstance(model, (nn.Module, ModelAdapter)):
            raise XAIError(
                f"model must be a zoo name, a ModelSpec, a ModelAdapter or an nn.Module, got {type(model).__name__}"
            )
        adapter = as_adapter(model)
        kwargs: dict[str, Any] = {
            "mean": adapter.mean,
            "std": adapter.std,
            "labels": adapter.labels,
            "name": adapter.name,
            "preprocess": adapter._preprocess,
            "input_size": adapter.input_size if adapter.has_input_size else None,
        }
        state = {k: v.detach().cpu().clone() for k, v in adapter.model.state_dict().items()}
        return cls(
            factory=factory or _default_factory(adapter.model),
            state_dict=state,
            adapter={k: v for k, v in kwargs.items() if v is not None},
            fingerprint=fingerprint(adapter.model),
            local=adapter,
        )

    def build(self, device: str | torch.device | None = None) -> ModelAdapter:
        """The model as a ModelAdapter in eval mode on ``device`` (default: CUDA when available)."""
        if self.local is not None:
            return self.local
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.zoo is not None:
            from .. import zoo

            return zoo.load(self.zoo, device=device)
        if self.factory is None:
            raise XAIError(
                "this model cannot be rebuilt in another process: give ModelSpec(factory=..., state_dict=...) "
                "or evaluate(..., factory=...) with a function that builds the architecture"
            )
        model = self.factory()
        model.load_state_dict(self.state_dict or {})
        return ModelAdapter(model.to(device).eval(), **self.adapter)


def _default_factory(model: nn.Module) -> Callable[[], nn.Module] | None:
    """The module's class when ``cls()`` builds a module with the same state-dict keys and shapes."""
    cls = type(model)
    try:
        fresh = cls()
    except Exception:  # any constructor that needs arguments
        return None
    mine = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    return cls if mine == theirs else None


def load_adapter(spec: ModelSpec) -> ModelAdapter:
    """The spec's model in this process, built once per fingerprint (the per-worker model cache)."""
    if spec.local is not None:
        return spec.local
    if spec.fingerprint not in _ADAPTERS:
        _ADAPTERS[spec.fingerprint] = spec.build()
    return _ADAPTERS[spec.fingerprint]


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` intra-op threads (None: unchanged), restoring the previous count afterwards."""
    if not threads:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def kept_environment(keys: Sequence[str] = GUARDED_ENV) -> Iterator[dict[str, str | None]]:
    """Put the variables ``keys`` of ``os.environ`` back as they were (set, changed or removed) when the
    block ends; other variables are left alone."""
    saved = environment(keys)
    try:
        yield saved
    finally:
        restore_environment(saved)


def environment(keys: Sequence[str] = GUARDED_ENV) -> dict[str, str | None]:
    """The values of ``keys`` in ``os.environ`` (None where unset)."""
    return {key: os.environ.get(key) for key in keys}


def restore_environment(saved: Mapping[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        elif os.environ.get(key) != value:
            os.environ[key] = value


Task = Any
Work = Callable[..., Any]


class InProcessExecutor:
    """Runs every shard in this process, one after the other, on the caller's model."""

    workers = 1

    def map(
        self, fn: Work, spec: ModelSpec, shared: Any, tasks: Sequence[Task]
    ) -> Iterator[tuple[Task, Any]]:
        for task in tasks:
            yield task, fn(spec, shared, task)

    def close(self) -> None:
        """Nothing to release."""


SHARDS_PER_WORKER = 3
"""Shards in flight per Dask worker: enough to keep it busy, few enough to keep each graph update small."""


class DaskExecutor:
    """Shards as Dask futures on a LocalCluster it starts (``n_workers`` processes) or on ``client``'s cluster.

    Args:
        n_workers: processes of the LocalCluster (default: the CPU count, or the GPU count with CUDA).
        threads: torch threads per task (default: cores ÷ workers for a LocalCluster, unchanged for a client).
        client: an existing ``distributed.Client``; it is used as is and not closed.

    Use it as a context manager (or call :meth:`close`) to stop a cluster it started; ``evaluate(...,
    executor="dask")`` does that for you.
    """

    def __init__(self, n_workers: int | None = None, threads: int | None = None, client: Any = None) -> None:
        try:
            import distributed
        except ImportError as error:  # pragma: no cover - a run-time dependency
            raise XAIError(
                "executor='dask' needs dask[distributed]: pip install 'dask[distributed]'"
            ) from error
        self._owned = client is None
        self.cluster = None
        cores = os.cpu_count() or 1
        if client is None:
            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
            n_workers = n_workers or gpus or cores
            if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
                raise XAIError(f"n_workers must be a positive int, got {n_workers!r}")
            self.threads = threads or max(1, cores // n_workers)
            env = {key: str(self.threads) for key in DASK_ENV[:3]}
            import dask

            with (
                kept_environment(),
                dask.config.set(
                    {
                        "distributed.nanny.pre-spawn-environ": {},
                        "distributed.worker.multiprocessing-method": "spawn",
                    }
                ),
            ):
                self.cluster = self._local_cluster(distributed, n_workers, env, gpus)
                client = distributed.Client(self.cluster)
        else:
            self.threads = threads
        self.client = client
        self.workers = n_workers if self._owned else max(1, len(client.scheduler_info()["workers"]))

    def _local_cluster(self, distributed: Any, n_workers: int, env: dict[str, str], gpus: int) -> Any:
        options = {"dashboard_address": None, "silence_logs": 40, "env": env}
        if gpus:
            try:
                from dask_cuda import LocalCUDACluster
            except ImportError:
                pass
            else:
                return LocalCUDACluster(n_workers=min(n_workers, gpus), threads_per_worker=1, **options)
        return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, **options)

    def map(
        self, fn: Work, spec: ModelSpec, shared: Any, tasks: Sequence[Task]
    ) -> Iterator[tuple[Task, Any]]:
        """Run the shards on the cluster, a few per worker at a time.

        A shard's pictures travel inside its task (so a killed worker's shards are simply run again), and the
        tasks are submitted as earlier ones finish: each graph update then carries a few shards, not the whole
        data set (2,000 in-memory pictures would be one 100 MB graph).
        """
        from distributed import as_completed

        saved = environment()
        spec_ref = self.client.scatter(spec, broadcast=True, hash=False)
        shared_ref = self.client.scatter(shared, broadcast=True, hash=False) if shared is not None else None
        window = SHARDS_PER_WORKER * max(1, len(self.client.scheduler_info().get("workers", {})))
        waiting = iter(tasks)
        futures: dict[Any, Task] = {}
        running = as_completed()

        def submit(count: int) -> None:
            for task in itertools.islice(waiting, count):
                future = self.client.submit(
                    _threaded, fn, spec_ref, shared_ref, task, self.threads, pure=False
                )
                futures[future] = task
                running.add(future)

        try:
            submit(window)
            for future in running:
                task = futures.pop(future)
                submit(1)
                restore_environment(saved)
                yield task, future.result()
        finally:
            restore_environment(saved)
            for future in futures:
                if not future.done():
                    future.cancel()

    def close(self) -> None:
        """Stop the LocalCluster this executor started (a user's client is left running)."""
        if self._owned:
            with kept_environment():
                self.client.close()
                if self.cluster is not None:
                    self.cluster.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _threaded(fn: Work, spec: ModelSpec, shared: Any, task: Task, threads: int | None) -> Any:
    with torch_threads(threads):
        return fn(spec, shared, task)


class RayExecutor:
    """Shards through Ray Data ``map_batches`` with a callable class: each actor builds the model once.

    Args:
        concurrency: actors (default: the CPU count, or the GPU count with ``num_gpus``).
        num_gpus: GPUs per actor (e.g. 1 on a GPU cluster).
        address: an existing Ray cluster (``"auto"``); default: a local one.
    """

    def __init__(
        self, concurrency: int | None = None, num_gpus: float = 0, address: str | None = None
    ) -> None:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            import ray
        except ImportError as error:
            raise XAIError(
                "executor='ray' needs Ray, an optional extra: pip install 'xai_widgets[ray]' "
                "(or use executor='dask', the default engine)"
            ) from error
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        self.concurrency = concurrency or int(num_gpus and torch.cuda.device_count()) or (os.cpu_count() or 1)
        self.num_gpus = num_gpus
        self.workers = self.concurrency

    def map(
        self, fn: Work, spec: ModelSpec, shared: Any, tasks: Sequence[Task]
    ) -> Iterator[tuple[Task, Any]]:
        import pickle

        spec_ref, shared_ref = self.ray.put(spec), self.ray.put(shared)
        items = [{"task": pickle.dumps(task)} for task in tasks]
        dataset = self.ray.data.from_items(items).map_batches(
            _RayShard,
            fn_constructor_args=(fn, spec_ref, shared_ref),
            batch_size=1,
            concurrency=self.concurrency,
            num_gpus=self.num_gpus,
            batch_format="pandas",
        )
        for row in dataset.iter_rows():
            yield pickle.loads(row["task"]), pickle.loads(row["result"])

    def close(self) -> None:
        """The Ray runtime stays up (actors are per run); ``ray.shutdown()`` stops it."""


class _RayShard:
    """A Ray Data actor: the spec resolved once, then one shard per call."""

    def __init__(self, fn: Work, spec_ref: Any, shared_ref: Any) -> None:
        import ray

        self.fn, self.spec, self.shared = fn, ray.get(spec_ref), ray.get(shared_ref)
        load_adapter(self.spec)

    def __call__(self, batch: Any) -> Any:
        import pickle

        tasks = [pickle.loads(blob) for blob in batch["task"]]
        batch["result"] = [pickle.dumps(self.fn(self.spec, self.shared, task)) for task in tasks]
        return batch


def resolve_executor(executor: Any) -> tuple[Any, bool]:
    """``(executor, owned)``: None → in-process; ``"dask"``/``"ray"`` → a new one (owned: closed after the
    run); a ``distributed.Client`` → a DaskExecutor on it; an executor object → itself."""
    if executor is None or executor == "inprocess":
        return InProcessExecutor(), True
    if isinstance(executor, str):
        if executor == "dask":
            return DaskExecutor(), True
        if executor == "ray":
            return RayExecutor(), True
        raise XAIError(
            f"unknown executor {executor!r}; use None (in-process), 'dask', 'ray' or a distributed.Client"
        )
    if hasattr(executor, "map") and hasattr(executor, "close"):
        return executor, False
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover
        Client = ()  # noqa: N806
    if isinstance(executor, Client):
        return DaskExecutor(client=executor), True
    raise XAIError(
        f"executor must be None, 'dask', 'ray', a distributed.Client or an executor object, got {type(executor).__name__}"
    )
