"""Fourier (Walsh) spectra of pseudo-Boolean functions: exact transform and heavy-coefficient search.

A function f: {−1, 1}ⁿ → ℝ has the unique expansion f(b) = Σ_S f̂(S) Π_{i∈S} b_i over the subsets S of
{0, …, n−1}, with f̂(S) = E_b[f(b) χ_S(b)] under the uniform distribution (O'Donnell, *Analysis of Boolean
Functions*, ch. 1). ``b_i = +1`` is "true": AND(b0, b1) as ±1 is −½ + ½b0 + ½b1 + ½b0b1. Parseval gives
E[f²] = Σ_S f̂(S)², so each interaction order k = |S| owns the weight Σ_{|S|=k} f̂(S)².

- ``exact`` evaluates f on all 2ⁿ points in chunks on the device and applies a fast Walsh–Hadamard
  transform (O(n 2ⁿ), vectorised): every coefficient.
- ``search`` finds the coefficients with |f̂(S)| ≥ τ from queries alone (Goldreich–Levin / Kushilevitz–
  Mansour): a bucket search over prefixes that keeps each prefix whose estimated Fourier weight is at least
  τ²/2, batched so that one depth costs one set of queries for every bucket.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError, MethodError

Progress = Callable[[int, int], None] | None
BooleanFunction = Callable[[Tensor], Tensor]

MAX_EXACT = 24
_CHUNK = 1 << 15


@dataclass(frozen=True, eq=False)
class Spectrum:
    """Fourier coefficients of a pseudo-Boolean function, with what produced them.

    Variables are named by ``units`` (variable i is ``units[i]``; for a model layer, the unit index): every
    subset in the public API is a sorted tuple of these names. Exact spectra keep all 2ⁿ coefficients
    (``dense``, indexed by bitmask: bit i set ⇔ variable i in S); searched spectra keep the heavy ones with
    a confidence interval each.

    Attributes:
        n: number of variables.
        method: ``"exact"`` or ``"search"``.
        evaluations: points of {−1, 1}ⁿ at which f was evaluated.
        total_weight: E[f²] (exact, or estimated from samples in search mode).
        units: the variables' names.
        options: the options used (τ, samples, …) and, for model spectra, the layer, target, f, on, off.
        dense: exact mode: the 2ⁿ coefficients, index = bitmask of the variables' positions.
        found: search mode: (positions, value, low, high) of each reported coefficient.
    """

    n: int
    method: str
    evaluations: int
    total_weight: float
    units: tuple[Any, ...]
    options: dict[str, Any] = field(default_factory=dict)
    dense: Tensor | None = field(default=None, repr=False)
    found: tuple[tuple[tuple[int, ...], float, float, float], ...] = field(default=(), repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ coefficients
    def _name(self, positions: Iterable[int]) -> tuple[Any, ...]:
        return tuple(sorted(self.units[p] for p in positions))

    def _entries(self) -> list[tuple[tuple[int, ...], float, float, float]]:
        """(positions, value, low, high) for every non-zero coefficient, strongest first (cached)."""
        if "entries" not in self._cache:
            if self.dense is None:
                entries = sorted(self.found, key=lambda e: -abs(e[1]))
            else:
                values = self.dense
                scale = math.sqrt(max(self.total_weight, 0.0)) or 1.0
                keep = torch.nonzero(values.abs() > 1e-9 * scale).squeeze(1)
                keep = keep[torch.argsort(values[keep].abs(), descending=True, stable=True)]
                entries = []
                for mask, value in zip(keep.tolist(), values[keep].tolist()):
                    positions = tuple(i for i in range(self.n) if mask >> i & 1)
                    entries.append((positions, value, value, value))
            self._cache["entries"] = entries
        return self._cache["entries"]

    @property
    def coefficients(self) -> tuple[tuple[tuple[Any, ...], float], ...]:
        """(subset of unit names, f̂(S)) for every non-zero coefficient, sorted by |f̂(S)| descending."""
        return tuple((self._name(p), v) for p, v, _, _ in self._entries())

    def top(self, k: int = 10, order: int | None = None) -> list[tuple[tuple[Any, ...], float]]:
        """The ``k`` strongest non-zero coefficients, optionally only those of one interaction ``order``.

        For an exact spectrum this is a top-k over the dense vector, cheap also for n = 20 (where
        :attr:`coefficients` lists up to a million subsets).
        """
        if self.dense is not None and "entries" not in self._cache:
            values = self.dense
            if order is not None:
                values = torch.where(self._orders() == order, values, torch.zeros_like(values))
            idx = torch.topk(values.abs(), min(k, values.numel())).indices
            out = []
            for mask, value in zip(idx.tolist(), values[idx].tolist()):
                if value != 0.0:
                    out.append((self._name(i for i in range(self.n) if mask >> i & 1), value))
            return out
        entries = [e for e in self._entries() if order is None or len(e[0]) == order]
        return [(self._name(p), v) for p, v, _, _ in entries[:k]]

    def _orders(self) -> Tensor:
        if "orders" not in self._cache:
            self._cache["orders"] = _popcount(self.dense.numel())
        return self._cache["orders"]

    def value(self, subset: Iterable[Any]) -> float:
        """f̂(S) for a subset of unit names (0.0 for a coefficient the search did not report)."""
        positions = self._positions(subset)
        if self.dense is not None:
            return float(self.dense[sum(1 << p for p in positions)])
        for p, v, _, _ in self.found:
            if p == positions:
                return v
        return 0.0

    def interval(self, subset: Iterable[Any]) -> tuple[float, float]:
        """Confidence interval of f̂(S) (search mode, at ``options['confidence']``); exact: (f̂, f̂)."""
        positions = self._positions(subset)
        if self.dense is not None:
            value = self.value(subset)
            return value, value
        for p, _, low, high in self.found:
            if p == positions:
                return low, high
        raise InputError(f"the search reported no coefficient for {tuple(subset)}")

    def _positions(self, subset: Iterable[Any]) -> tuple[int, ...]:
        index = {u: i for i, u in enumerate(self.units)}
        try:
            return tuple(sorted(index[u] for u in subset))
        except KeyError as error:
            raise InputError(f"{error.args[0]!r} is not one of this spectrum's units {self.units}") from None

    # ----------------------------------------------------------------- weights
    def order_weights(self) -> dict[int, float]:
        """k → Σ_{|S|=k} f̂(S)² (k = 0 is the empty set, f̂(∅)² = E[f]²); exact: every k in 0..n."""
        return {k: pos + neg for k, (pos, neg) in self.signed_order_weights().items()}

    def signed_order_weights(self) -> dict[int, tuple[float, float]]:
        """k → (weight of the positive coefficients of order k, weight of the negative ones)."""
        if "signed" not in self._cache:
            if self.dense is not None:
                orders = self._orders()
                square = self.dense.square()
                pos = torch.zeros(self.n + 1, dtype=torch.float64, device=self.dense.device)
                neg = torch.zeros_like(pos)
                pos.index_add_(0, orders, torch.where(self.dense > 0, square, 0.0))
                neg.index_add_(0, orders, torch.where(self.dense < 0, square, 0.0))
                result = {k: (p, q) for k, (p, q) in enumerate(zip(pos.tolist(), neg.tolist()))}
            else:
                top = max((len(p) for p, *_ in self.found), default=0)
                result = {k: (0.0, 0.0) for k in range(top + 1)}
                for p, v, _, _ in self.found:
                    a, b = result[len(p)]
                    result[len(p)] = (a + v * v, b) if v > 0 else (a, b + v * v)
            self._cache["signed"] = result
        return dict(self._cache["signed"])

    def order_shares(self) -> dict[int, float]:
        """k ≥ 1 → the share of the variance Var f = Σ_{S≠∅} f̂(S)² carried by order k (compare models)."""
        weights = self.order_weights()
        variance = self.total_weight - weights.get(0, 0.0)
        if variance <= 0:
            return {k: 0.0 for k in weights if k > 0}
        return {k: w / variance for k, w in weights.items() if k > 0}

    def mean_order(self) -> float:
        """Σ_k k · share_k: the average interaction order of the variance (1 = units act alone)."""
        shares = self.order_shares()
        total = sum(shares.values())
        return sum(k * s for k, s in shares.items()) / total if total > 0 else 0.0

    @property
    def explained(self) -> float:
        """Σ f̂(S)² over the reported coefficients / E[f²] (1 for an exact spectrum)."""
        if self.total_weight <= 0:
            return 1.0
        return sum(self.order_weights().values()) / self.total_weight

    def table(self, order: int | None = None, k: int | None = None):
        """The coefficients as a pandas DataFrame (subset, order, value, low, high), strongest first."""
        import pandas as pd

        if self.dense is not None and k is not None:
            rows = [(subset, len(subset), v, v, v) for subset, v in self.top(k, order)]
        else:
            entries = [e for e in self._entries() if order is None or len(e[0]) == order][:k]
            rows = [(self._name(p), len(p), v, lo, hi) for p, v, lo, hi in entries]
        return pd.DataFrame(rows, columns=["subset", "order", "value", "low", "high"])

    def __repr__(self) -> str:
        weights = self.order_weights()
        head = ", ".join(f"{k}: {w:.3g}" for k, w in list(weights.items())[:6])
        return (
            f"Spectrum(n={self.n}, method={self.method!r}, evaluations={self.evaluations}, "
            f"E[f²]={self.total_weight:.4g}, explained={self.explained:.3f}, order weights {{{head}}})"
        )


# ------------------------------------------------------------------------- helpers
def _popcount(size: int, device: torch.device | None = None) -> Tensor:
    """Number of set bits of 0..size−1 (the order |S| of each bitmask)."""
    idx = torch.arange(size, device=device)
    count = torch.zeros(size, dtype=torch.long, device=device)
    while bool(idx.any()):
        count += idx & 1
        idx = idx >> 1
    return count


def cube_points(start: int, stop: int, n: int, device: torch.device | str | None = None) -> Tensor:
    """Points start..stop−1 of {−1, 1}ⁿ as a float tensor: bit i of the index set ⇔ b_i = −1."""
    idx = torch.arange(start, stop, device=device)
    bits = (idx.unsqueeze(1) >> torch.arange(n, device=device)) & 1
    return (1 - 2 * bits).to(torch.float32)


def walsh_hadamard(values: Tensor) -> Tensor:
    """f̂ from f's values on all 2ⁿ points (ordered as :func:`cube_points`): f̂(S) = 2⁻ⁿ Σ_b f(b) χ_S(b).

    The fast transform along the last dimension: n butterfly passes, O(n 2ⁿ), indexed by bitmask S.
    """
    size = values.shape[-1]
    n = size.bit_length() - 1
    if size != 1 << n:
        raise InputError(f"the Walsh–Hadamard transform needs 2ⁿ values, got {size}")
    lead = values.shape[:-1]
    x = values
    half = 1
    for _ in range(n):
        pairs = x.reshape(*lead, -1, 2, half)
        x = torch.stack((pairs[..., 0, :] + pairs[..., 1, :], pairs[..., 0, :] - pairs[..., 1, :]), dim=-2)
        half *= 2
    return x.reshape(*lead, size) / size


def _evaluate(f: BooleanFunction, points: Tensor) -> Tensor:
    values = f(points)
    if not isinstance(values, Tensor):
        raise InputError(f"f must return a tensor of {points.shape[0]} values, got {type(values).__name__}")
    if values.numel() != points.shape[0]:
        raise InputError(
            f"f must map an M×n tensor of ±1 to M values; for M={points.shape[0]} it returned shape "
            f"{tuple(values.shape)}"
        )
    values = values.reshape(-1).to(torch.float64)
    if not torch.isfinite(values).all():
        raise InputError("f returned NaN or infinite values")
    return values


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive int (number of Boolean variables), got {n!r}")


# --------------------------------------------------------------------------- exact
def _exact(
    f: BooleanFunction, n: int, device: torch.device, batch_size: int, progress: Progress
) -> tuple[Tensor, int]:
    if n > MAX_EXACT:
        raise MethodError(
            f"exact mode evaluates all 2ⁿ points; n={n} is too many (at most {MAX_EXACT}); use method='search'"
        )
    size = 1 << n
    values = torch.empty(size, dtype=torch.float64, device=device)
    chunks = range(0, size, batch_size)
    for done, start in enumerate(chunks, 1):
        stop = min(start + batch_size, size)
        values[start:stop] = _evaluate(f, cube_points(start, stop, n, device)).to(device)
        if progress is not None:
            progress(done, len(chunks))
    return walsh_hadamard(values), size


# -------------------------------------------------------------------------- search
class _Sampler:
    """Uniform ±1 points on the device from a seeded generator, f evaluated in chunks, evaluations counted.

    Progress counts ``work``, the rows of sample-sized work done (points drawn, multiplied, evaluated by f,
    summed into characters), against ``total``, the search's plan once the pilot has sized the samples; it is
    reported after every chunk, so the bar moves during all of it and a cancel takes effect within a chunk.
    """

    def __init__(
        self,
        f: BooleanFunction,
        n: int,
        device: torch.device,
        seed: int,
        batch_size: int,
        progress: Progress = None,
    ) -> None:
        self.f, self.n, self.device, self.batch_size = f, n, device, batch_size
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.evaluations = 0
        self.work = 0
        self.total = 0
        self.progress = progress

    def advance(self, rows: int) -> None:
        """Count ``rows`` rows of work done and call progress(work, planned total); it may raise Cancelled."""
        self.work += rows
        if self.progress is not None and self.total:
            self.progress(min(self.work, self.total), self.total)

    def rows(self) -> int:
        """Rows per chunk of the sample-sized tensor work (about 16M elements), between two reports."""
        return max(1, (1 << 24) // self.n)

    def points(self, count: int) -> Tensor:
        """``count`` uniform ±1 points, drawn in chunks (the same stream as one draw) with a report between."""
        bits = torch.empty(count, self.n, device=self.device, dtype=torch.float32)
        for part in bits.split(self.rows()):
            torch.randint(0, 2, part.shape, generator=self.generator, device=self.device, out=part)
            self.advance(part.shape[0])
        return bits.mul_(2).sub_(1)

    def product(self, a: Tensor, b: Tensor) -> Tensor:
        """a ⊙ b in chunks, with a report between (a cancel is heard during sample-sized work too)."""
        out = torch.empty_like(a)
        for rows in range(0, a.shape[0], self.rows()):
            torch.mul(
                a[rows : rows + self.rows()], b[rows : rows + self.rows()], out=out[rows : rows + self.rows()]
            )
            self.advance(out[rows : rows + self.rows()].shape[0])
        return out

    def spliced(self, head: Tensor, tail: Tensor, stop: int) -> Tensor:
        """f at the points (head[:, :stop], tail[:, stop:]), built and evaluated chunk by chunk."""
        out = []
        for rows in range(0, head.shape[0], self.batch_size):
            part = slice(rows, rows + self.batch_size)
            out.append(self(torch.cat((head[part, :stop], tail[part, stop:]), dim=1)))
        return torch.cat(out)

    def __call__(self, points: Tensor) -> Tensor:
        out = []
        for chunk in points.split(self.batch_size):
            out.append(_evaluate(self.f, chunk).to(self.device))
            self.evaluations += chunk.shape[0]
            self.advance(chunk.shape[0])
        return torch.cat(out)


def _characters(signs: Tensor, subsets: Sequence[tuple[int, ...]]) -> Tensor:
    """χ_S = Π_{i∈S} b_i for every sample (rows of the ±1 matrix ``signs``) and subset: P × subsets.

    χ_S = (−1)^(number of −1 entries in S), so one (P × used columns) @ (used × subsets) product counts
    them for every subset at once.
    """
    used = sorted({i for subset in subsets for i in subset})
    column = {i: c for c, i in enumerate(used)}
    member = torch.zeros(len(used), len(subsets), dtype=torch.float32, device=signs.device)
    for j, subset in enumerate(subsets):
        for i in subset:
            member[column[i], j] = 1.0
    counts = (signs[:, used] < 0).to(torch.float32) @ member
    return 1.0 - 2.0 * torch.remainder(counts, 2)


def _character_means(
    values: Tensor,
    signs: Tensor,
    subsets: list[tuple[int, ...]],
    advance: Callable[[int], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """Mean and standard error of values·χ_S over the samples for each subset S (E[f χ_S] = f̂(S)).

    Since χ_S² = 1, the variance of values·χ_S is E[values²] − mean², with no per-subset pass. ``advance``
    gets the rows of each chunk of samples (a progress report that may raise Cancelled).
    """
    count = values.shape[0]
    total = torch.zeros(len(subsets), dtype=torch.float64, device=values.device)
    for rows in range(0, count, _CHUNK):
        part = slice(rows, rows + _CHUNK)
        total += values[part] @ _characters(signs[part], subsets).to(torch.float64)
        if advance is not None:
            advance(values[part].shape[0])
    mean = total / count
    variance = (values.square().mean() - mean.square()).clamp_min(0) * count / max(count - 1, 1)
    return mean, (variance / count).sqrt()


def _search(
    f: BooleanFunction,
    n: int,
    device: torch.device,
    *,
    tau: float | None,
    samples: int | None,
    max_order: int | None,
    seed: int,
    block: int,
    confidence: float,
    batch_size: int,
    progress: Progress,
) -> tuple[list[tuple[tuple[int, ...], float, float, float]], float, int, dict[str, Any]]:
    """Kushilevitz–Mansour bucket search (O'Donnell §3.5), batched per depth.

    The bucket of a prefix set α ⊆ {0..k−1} holds every S with S ∩ {0..k−1} = α; its weight
    W(α) = Σ_{T ⊆ {k..n−1}} f̂(α ∪ T)² = E[f(x, z) f(y, z) χ_α(x ⊙ y)] for independent prefixes x, y and a
    shared suffix z. Two independent samples X and X' serve every depth: depth k queries f at
    Y = (X'[:k], X[k:]), one evaluation per sample for all of its buckets at once (f(X) is shared).
    Buckets estimated below τ²/2 are dropped (a heavy coefficient's bucket weighs at least τ²); at depth n
    the buckets are single subsets, whose values E[f χ_S] come from a fresh sample with a normal interval.

    The search runs on g = f − c, c the mean of a 4096-point pilot: g has the same coefficients as f except
    at ∅, and its estimates have the variance of f rather than its second moment, which for a function
    with a large mean (a logit, an accuracy near 1) is many times smaller. f̂(∅) = E[f] is estimated
    directly from the final sample.
    """
    sampler = _Sampler(f, n, device, seed, batch_size, progress)
    z = 4.0
    depths = list(range(0, n, block))

    # the plan, in rows of work: the pilot (draw, f), then per sample size: the two draws, their product, f
    # at the base, per depth f and the character sums, and the final draw, f and character means; until the
    # pilot has sized the samples it counts with the largest sample size, so the bar never goes back
    def plan(size: int) -> int:
        return 2 * 4096 + size * (7 + 2 * len(depths))

    sampler.total = plan(1 << 21)
    pilot = sampler(sampler.points(4096))
    center = float(pilot.mean())
    variance = float(pilot.var())
    if tau is None:
        tau = 0.2 * math.sqrt(variance)
    if tau <= 0:
        if variance > 0:
            raise MethodError(f"tau must be positive, got {tau}")
        tau = 0.2 * math.sqrt(float(pilot.square().mean())) or 1.0  # a constant function: only ∅ to find
    if samples is None:
        # a bucket estimate averages g(x)g(y)χ; its standard deviation is at most √E[g⁴] (Cauchy–Schwarz),
        # which is Var f for a balanced ±1 function and larger for a skewed one: keep z standard errors
        # below τ²/2
        spread = math.sqrt(float((pilot - center).pow(4).mean()))
        samples = int(min(max(math.ceil((z * spread / (tau * tau / 2)) ** 2), 4096), 1 << 21))
    threshold = tau * tau / 2
    # Parseval: at most 2·Var f / τ² buckets weigh τ²/2; four times that (and 64) leaves room for noise
    limit = int(8 * variance / (tau * tau)) + 64
    truncated = 0
    sampler.total = plan(samples)  # less is done when the search empties early
    base, other = sampler.points(samples), sampler.points(samples)
    f_base = sampler(base)
    total_weight = float(f_base.square().mean())
    g_base = f_base - center
    signs = sampler.product(base, other)
    kept: list[tuple[int, ...]] = [()]
    largest = 1
    for start in depths:
        stop = min(start + block, n)
        width = stop - start
        products = (g_base * (sampler.spliced(other, base, stop) - center)).to(torch.float32)
        # χ_{α∪β} = χ_α χ_β with β in the new block: sum g·χ_α per sign pattern of the block, then one
        # Walsh–Hadamard transform over the 2^width patterns gives every extension's weight at once
        pattern = ((signs[:, start:stop] < 0).long() << torch.arange(width, device=device)).sum(1)
        sums = torch.zeros(1 << width, len(kept), dtype=torch.float32, device=device)
        for rows in range(0, samples, _CHUNK):
            part = slice(rows, rows + _CHUNK)
            sums.index_add_(0, pattern[part], _characters(signs[part], kept) * products[part].unsqueeze(1))
            sampler.advance(products[part].shape[0])
        weights = walsh_hadamard(sums.T) * ((1 << width) / samples)
        orders = torch.tensor([len(alpha) for alpha in kept], device=device).unsqueeze(1)
        allowed = weights >= threshold
        if max_order is not None:
            allowed &= orders + _popcount(1 << width, device).unsqueeze(0) <= max_order
        largest = max(largest, weights.numel())
        chosen = torch.nonzero(allowed)
        if chosen.shape[0] > limit:
            # more buckets than Parseval allows (Σ W = Var f): estimation noise; the heaviest stay
            heaviest = torch.topk(weights[chosen[:, 0], chosen[:, 1]], limit).indices
            chosen, truncated = chosen[heaviest], truncated + 1
        kept = [
            kept[row] + tuple(start + i for i in range(width) if mask >> i & 1)
            for row, mask in chosen.tolist()
        ]
        if not kept:
            break
    points = sampler.points(samples)
    values = sampler(points)
    subsets = [()] + [subset for subset in kept if subset]
    means, errors = _character_means(values - center, points, subsets, sampler.advance)
    means[0] += center  # E[f] itself; its standard error is that of the centred mean
    half = statistics.NormalDist().inv_cdf(0.5 + confidence / 2) * errors
    found: list[tuple[tuple[int, ...], float, float, float]] = []
    for subset, value, width in zip(subsets, means.tolist(), half.tolist()):
        if value * value >= threshold:
            found.append((subset, value, value - width, value + width))
    if progress is not None:
        progress(sampler.total, sampler.total)
    info = {"tau": tau, "samples": samples, "largest_bucket_set": largest, "truncated_depths": truncated}
    return found, total_weight, sampler.evaluations, info


# ---------------------------------------------------------------------- public API
def fourier(
    f: BooleanFunction,
    n: int,
    method: str = "exact",
    *,
    tau: float | None = None,
    samples: int | None = None,
    max_order: int | None = None,
    seed: int = 0,
    block: int = 8,
    confidence: float = 0.95,
    batch_size: int = _CHUNK,
    device: torch.device | str | None = None,
    units: Sequence[Any] | None = None,
    progress: Progress = None,
    options: dict[str, Any] | None = None,
) -> Spectrum:
    """The Fourier (Walsh) spectrum of a pseudo-Boolean function f(b) = Σ_S f̂(S) Π_{i∈S} b_i.

    Args:
        f: batched callable: an M×n float tensor of ±1 (+1 = true/on) → M values.
        n: number of variables.
        method: ``"exact"`` (all 2ⁿ coefficients by a fast Walsh–Hadamard transform, n ≤ 24) or
            ``"search"`` (the coefficients with |f̂(S)| ≥ τ, Goldreich–Levin / Kushilevitz–Mansour).
        tau: search threshold on |f̂(S)| in units of f; default 0.2 × the standard deviation of f (from a
            4096-point pilot), i.e. coefficients that carry at least 4% of the variance.
        samples: samples per bucket estimate (search); default such that 4 standard errors of a bucket weight
            stay below τ²/2: 40 000 at the default τ, about 40 000·(0.2·σ/τ)⁴ for another τ (a thousand
            turns noise into false coefficients).
        max_order: search only subsets of at most this size.
        seed: seed of the search's random points (the results are reproducible).
        block: search depth step: variables added to the prefix per depth (each bucket splits into 2^block);
            fewer depths cost fewer evaluations, larger steps more bucket estimates per depth.
        confidence: level of the search's coefficient intervals.
        batch_size: points per call of ``f``.
        device: where the points are made (default CPU; :func:`spectroscopy` uses the model's device).
        units: names of the variables (default 0..n−1); subsets are reported with these names.
        progress: ``progress(done, total)`` after each chunk of ``batch_size`` evaluations of f (search: done and
            total count evaluations of f, the total planned from the pilot); may raise Cancelled.
        options: extra entries recorded in ``Spectrum.options``.

    Returns:
        A :class:`Spectrum`; ``evaluations`` counts the points at which f was evaluated.

    Example:
        >>> maj3 = lambda b: torch.sign(b.sum(1))
        >>> fourier(maj3, 3).value((0, 1, 2))
        -0.5
    """
    _check_n(n)
    device = torch.device(device) if device is not None else torch.device("cpu")
    names = tuple(range(n)) if units is None else tuple(units)
    if len(names) != n or len(set(names)) != n:
        raise InputError(f"units must name the {n} variables once each, got {len(names)} names")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    recorded = dict(options or {})
    if method == "exact":
        dense, evaluations = _exact(f, n, device, batch_size, progress)
        total = float(dense.square().sum())
        return Spectrum(n, "exact", evaluations, total, names, recorded, dense=dense.cpu())
    if method == "search":
        if not isinstance(block, int) or block < 1:
            raise MethodError(f"block must be a positive int, got {block!r}")
        if max_order is not None and (not isinstance(max_order, int) or max_order < 0):
            raise MethodError(f"max_order must be None or an int ≥ 0, got {max_order!r}")
        if samples is not None and (not isinstance(samples, int) or samples < 2):
            raise MethodError(f"samples must be an int ≥ 2, got {samples!r}")
        if not 0 < confidence < 1:
            raise MethodError(f"confidence must lie in (0, 1), got {confidence}")
        found, total, evaluations, info = _search(
            f,
            n,
            device,
            tau=tau,
            samples=samples,
            max_order=max_order,
            seed=seed,
            block=min(block, n),
            confidence=confidence,
            batch_size=batch_size,
            progress=progress,
        )
        recorded.update(info, max_order=max_order, seed=seed, block=block, confidence=confidence)
        return Spectrum(n, "search", evaluations, total, names, recorded, found=tuple(found))
    raise MethodError(f"unknown method {method!r}; use 'exact' or 'search'")
