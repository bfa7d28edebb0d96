"""Fourier spectra: the known expansions, agreement with the brute-force transform, Parseval, and the
heavy-coefficient search on planted sparse functions with noise."""

import itertools

import pytest
import torch

from xai_widgets import Cancelled, InputError, MethodError
from xai_widgets.actspec import cube_points, fourier, walsh_hadamard


def maj3(b):
    return torch.sign(b[:, :3].sum(1))


def and2(b):
    return torch.where((b[:, 0] > 0) & (b[:, 1] > 0), 1.0, -1.0)


def characters(points: torch.Tensor, subsets: list[tuple[int, ...]]) -> torch.Tensor:
    """χ_S(b) = Π_{i∈S} b_i for every point (rows) and subset (columns), straight from the definition."""
    used = sorted({i for subset in subsets for i in subset})
    member = torch.zeros(len(used), len(subsets))
    for j, subset in enumerate(subsets):
        member[[used.index(i) for i in subset], j] = 1.0
    negatives = (points[:, used] < 0).float() @ member
    return 1.0 - 2.0 * torch.remainder(negatives, 2)


def brute_force(values: torch.Tensor, n: int) -> dict[tuple[int, ...], float]:
    """f̂(S) = 2⁻ⁿ Σ_b f(b) χ_S(b) for every S: the full 2ⁿ × 2ⁿ character matrix, no fast transform."""
    subsets = [s for r in range(n + 1) for s in itertools.combinations(range(n), r)]
    chi = characters(cube_points(0, 1 << n, n), subsets).double()
    return dict(zip(subsets, (values @ chi / (1 << n)).tolist()))


def test_majority_of_three():
    spectrum = fourier(maj3, 3)
    assert dict(spectrum.coefficients) == pytest.approx({(0,): 0.5, (1,): 0.5, (2,): 0.5, (0, 1, 2): -0.5})
    assert spectrum.order_weights() == pytest.approx({0: 0.0, 1: 0.75, 2: 0.0, 3: 0.25})
    assert spectrum.evaluations == 8 and spectrum.method == "exact"


def test_and_of_two_with_plus_one_true():
    spectrum = fourier(and2, 2)
    assert dict(spectrum.coefficients) == pytest.approx({(): -0.5, (0,): 0.5, (1,): 0.5, (0, 1): 0.5})
    signed = spectrum.signed_order_weights()
    assert signed.keys() == {0, 1, 2}
    assert [value for k in range(3) for value in signed[k]] == pytest.approx([0.0, 0.25, 0.5, 0.0, 0.25, 0.0])


def test_parity_of_two():
    spectrum = fourier(lambda b: b[:, 0] * b[:, 1], 2)
    assert spectrum.coefficients == (((0, 1), 1.0),)
    assert spectrum.order_shares() == {1: 0.0, 2: 1.0} and spectrum.mean_order() == 2.0


@pytest.mark.parametrize("n", [1, 4, 7, 10])
def test_random_functions_match_brute_force_and_parseval(n):
    generator = torch.Generator().manual_seed(n)
    table = torch.randn(1 << n, generator=generator, dtype=torch.float64)
    powers = 2 ** torch.arange(n)

    def f(b):  # look the point up in the table: index bit i set ⇔ b_i = −1
        return table[((b < 0).long() * powers).sum(1)]

    spectrum = fourier(f, n, batch_size=37)  # chunks that do not divide 2ⁿ
    expected = brute_force(table, n)
    for subset, value in expected.items():
        assert spectrum.value(subset) == pytest.approx(value, abs=1e-6)
    assert spectrum.total_weight == pytest.approx(float(table.square().mean()), rel=1e-9)
    assert sum(spectrum.order_weights().values()) == pytest.approx(spectrum.total_weight, rel=1e-9)
    assert spectrum.explained == pytest.approx(1.0)
    # f(b) = Σ_S f̂(S) χ_S(b): the inverse transform is the same butterfly, scaled back
    torch.testing.assert_close(walsh_hadamard(spectrum.dense) * (1 << n), table)


def test_top_and_table_by_order_and_unit_names():
    spectrum = fourier(maj3, 3, units=["a", "b", "c"])
    assert spectrum.top(1, order=3) == [(("a", "b", "c"), -0.5)]
    assert spectrum.value(("c", "a", "b")) == pytest.approx(-0.5)
    table = spectrum.table(order=1)
    assert list(table["order"]) == [1, 1, 1] and table["value"].tolist() == pytest.approx([0.5] * 3)


def test_progress_reports_and_cancels():
    calls = []
    fourier(maj3, 10, batch_size=256, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 4) for i in range(1, 5)]

    def stop(done, total):
        raise Cancelled("superseded")

    with pytest.raises(Cancelled):
        fourier(maj3, 10, batch_size=256, progress=stop)


def test_search_reports_every_chunk_of_work_and_cancels_within_one():
    evaluated = []
    stopped = []

    def counted(b):
        assert not stopped, "f was called after progress raised Cancelled"
        evaluated.append(b.shape[0])
        return maj3(b)

    calls = []
    spectrum = fourier(counted, 12, "search", batch_size=512, progress=lambda d, t: calls.append((d, t)))
    assert dict(spectrum.coefficients)[(0, 1, 2)] == pytest.approx(-0.5, abs=0.05)
    # a report after every chunk of f (and of the sample-sized work between), never backwards, ending at 100%
    assert len(calls) > len(evaluated) and max(evaluated) <= 512 and sum(evaluated) == spectrum.evaluations
    fractions = [done / total for done, total in calls]
    assert fractions == sorted(fractions) and calls[-1][0] == calls[-1][1]
    assert len({total for _, total in calls}) == 2  # the pilot's largest plan, then the sized plan
    samples, depths = spectrum.options["samples"], 2  # n = 12 in blocks of 8
    assert calls[-1][1] == 2 * 4096 + samples * (7 + 2 * depths)

    evaluated.clear()
    reports = []

    def stop_at_tenth(done, total):
        reports.append(done)
        if len(reports) == 10:
            stopped.append(True)
            raise Cancelled("superseded")

    with pytest.raises(Cancelled):
        fourier(counted, 12, "search", batch_size=512, progress=stop_at_tenth)
    assert stopped and len(evaluated) < 10  # stopped at once: counted() asserts it is not called again


def test_bad_arguments_raise_named_errors():
    with pytest.raises(InputError, match="M values"):
        fourier(lambda b: b, 3)
    with pytest.raises(InputError, match="NaN"):
        fourier(lambda b: b[:, 0] / 0 * 0, 2)
    with pytest.raises(MethodError, match="search"):
        fourier(maj3, 30)
    with pytest.raises(MethodError, match="unknown method"):
        fourier(maj3, 3, method="fast")
    with pytest.raises(InputError, match="positive int"):
        fourier(maj3, 0)


def planted(n: int, coefficients: dict, noise: float, seed: int):
    """Σ planted c_S χ_S + many small coefficients (|c| = 0.02 < τ/4) + Gaussian noise on every evaluation."""
    generator = torch.Generator().manual_seed(seed)
    small = {}
    while len(small) < 40:
        order = int(torch.randint(1, 4, (1,), generator=generator))
        subset = tuple(sorted(torch.randperm(n, generator=generator)[:order].tolist()))
        if subset not in coefficients:
            small[subset] = 0.02 * (1 if torch.rand(1, generator=generator) < 0.5 else -1)
    terms = {**coefficients, **small}
    values = torch.tensor(list(terms.values()))

    def f(b):
        return characters(b, list(terms)) @ values + noise * torch.randn(b.shape[0], generator=generator)

    return f


@pytest.mark.parametrize(
    "n, block",
    [
        (64, 4),
        pytest.param(256, 16, marks=pytest.mark.slow),
    ],
)
def test_search_finds_every_planted_coefficient_and_nothing_else(n, block):
    tau = 0.2
    heavy = {(): 0.25, (3,): 0.5, (10, n - 1): -0.4, (1, 2, n // 2): 0.3, (7,): -0.2}
    spectrum = fourier(planted(n, heavy, noise=0.3, seed=n), n, "search", tau=tau, block=block, seed=0)
    found = dict(spectrum.coefficients)
    assert set(found) == set(heavy)  # every |f̂| ≥ τ, and none that is not there
    for subset, value in heavy.items():
        assert found[subset] == pytest.approx(value, abs=0.05)
        low, high = spectrum.interval(subset)
        assert low < found[subset] < high and high - low < 0.05
    # ~19 000 samples per estimate (sized from τ), one evaluation per sample at each of n/block depths
    assert spectrum.options["samples"] > 10_000
    depths = -(-n // block)
    assert spectrum.evaluations == 4096 + spectrum.options["samples"] * (depths + 2)
    assert spectrum.total_weight == pytest.approx(
        sum(v * v for v in heavy.values()) + 40 * 0.02**2 + 0.09, rel=0.05
    )


def test_search_equals_exact_on_a_small_function():
    exact = fourier(maj3, 12)
    found = fourier(maj3, 12, "search", tau=0.3, seed=1)
    assert dict(found.coefficients) == pytest.approx(dict(exact.coefficients), abs=0.02)
    assert found.explained == pytest.approx(1.0, abs=0.03)


def test_search_respects_max_order():
    spectrum = fourier(maj3, 8, "search", tau=0.3, max_order=1, seed=2)
    assert {len(s) for s, _ in spectrum.coefficients} == {1}
    assert len(spectrum.coefficients) == 3


def test_search_centres_a_function_with_a_large_mean():
    # E[f] = 20 dwarfs the variance 0.52: the search runs on f − mean, so the default τ = 0.2·σ and
    # (4·√E[(f − E f)⁴] / (τ²/2))² ≈ 74 000 samples per estimate are enough (not the 2 million that f's
    # second moment would ask for), and f̂(∅) = 20 is reported from the final sample
    def f(b):
        return 20.0 + 0.6 * b[:, 5] - 0.4 * b[:, 2] * b[:, 9]

    spectrum = fourier(f, 32, "search", seed=3)
    assert dict(spectrum.coefficients) == pytest.approx({(): 20.0, (5,): 0.6, (2, 9): -0.4}, abs=0.01)
    assert spectrum.options["tau"] == pytest.approx(0.2 * (0.6**2 + 0.4**2) ** 0.5, rel=0.05)
    assert 60_000 < spectrum.options["samples"] < 90_000
    assert spectrum.evaluations == 4096 + spectrum.options["samples"] * (32 // 8 + 2)
