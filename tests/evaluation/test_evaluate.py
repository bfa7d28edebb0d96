"""``xai_widgets.evaluate``: the tidy table against the metrics called directly, resume, bad images, datasets,
Dask equal to in-process (also with a worker killed mid-run), the caller's environment kept, Ray optional."""

from __future__ import annotations

import os
import signal

import pandas as pd
import pytest
import torch
from modelguard import SmallCNN

import xai_widgets as xw
from xai_widgets.evaluation import ModelSpec
from xai_widgets.evaluation.runner import noise_field
from xai_widgets.metrics.road import road_outputs

N = 12


@pytest.fixture
def adapter():
    torch.manual_seed(0)
    return xw.ModelAdapter(SmallCNN().eval(), mean=[0.5] * 3, std=[0.25] * 3, name="small")


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(N, 3, 16, 16, generator=generator)
    labels = torch.randint(0, 5, (N,), generator=generator)
    masks = torch.zeros(N, 16, 16, dtype=torch.bool)
    for i in range(N):
        r, c = torch.randint(0, 10, (2,), generator=generator).tolist()
        masks[i, r : r + 6, c : c + 6] = True
    return images, labels, masks


METHODS = ["saliency", "gradcam"]
METRICS = {"road": {"percentiles": (25, 50, 75)}, "pointing_game": {}, "deletion": {"steps": 4}}


def run(adapter, data, **kwargs):
    images, labels, masks = data
    return xw.evaluate(adapter, images, METHODS, METRICS, labels=labels, masks=masks, batch_size=4, **kwargs)


def test_the_table_holds_the_metrics_computed_directly_and_the_model_is_unchanged(adapter, data, guard):
    images, labels, masks = data
    with guard(adapter.model):
        result = run(adapter, data)
    table = result.table
    rows_per_image = 1 + 3 * 3 + 1 + 1  # road, morf/lerf/accuracy per percentile, pointing game, deletion AUC
    assert len(table) == N * len(METHODS) * rows_per_image and result.errors.empty
    assert not table.duplicated(["index", "method", "metric"]).any()
    x = adapter.preprocess(images)
    explanation = xw.explain(adapter, x, labels, "saliency")
    noise = torch.stack([noise_field(i, x.shape[1:], 0) for i in range(N)])
    probs, _ = road_outputs(
        adapter,
        x,
        explanation.attribution,
        labels,
        (25, 50, 75),
        ("morf", "lerf"),
        0.01,
        0,
        64,
        "auto",
        None,
        noise,
    )
    morf = result.values("saliency", "road_morf@50")
    torch.testing.assert_close(
        torch.tensor(morf.to_numpy()), probs[0, :, 0, 1].double(), rtol=1e-5, atol=1e-6
    )
    hits = xw.metrics.pointing.pointing_game(explanation, masks)
    assert result.values("saliency", "pointing_game").tolist() == hits.tolist()
    assert (table["target"] == table["label"]).all()
    summary = result.summary.set_index(["method", "metric"])
    row = summary.loc[("gradcam", "road")]
    assert row["ci_low"] <= row["mean"] <= row["ci_high"] and row["n"] == N
    assert list(result.curve("road_morf").index) == [25.0, 50.0, 75.0]
    assert set(result.by_class("pointing_game").columns) == set(METHODS)


def test_a_rerun_skips_finished_shards_and_a_bad_image_becomes_an_error_row(adapter, data, tmp_path):
    images, labels, masks = data
    broken = images.clone()
    broken[5, 0, 3, 3] = float("nan")
    first = run(adapter, (broken, labels, masks), out=tmp_path)
    errors = first.errors
    assert sorted(errors["method"]) == sorted(METHODS) and set(errors["index"]) == {5}
    assert "NaN" in errors["error"].iloc[0]
    assert set(first.table.dropna(subset=["metric"])["index"]) == set(range(N)) - {5}
    files = sorted(tmp_path.glob("*.parquet"))
    assert len(files) == len(METHODS) * N // 4
    files[0].unlink()
    calls = []
    second = run(adapter, (broken, labels, masks), out=tmp_path, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 3), (3, 3)]  # two of three shards were read back, one recomputed
    pd.testing.assert_frame_equal(second.table, first.table)
    other = run(
        adapter, (broken, labels, masks), out=tmp_path, seed=1, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[2] == (0, 3) and not other.table["value"].equals(first.table["value"])


class Pictures(torch.utils.data.Dataset):
    def __init__(self, data, with_mask: bool) -> None:
        self.data, self.with_mask = data, with_mask

    def __len__(self) -> int:
        return N

    def __getitem__(self, i):
        images, labels, masks = self.data
        return (images[i], int(labels[i]), masks[i]) if self.with_mask else (images[i], int(labels[i]))


def test_datasets_yielding_image_label_and_image_label_mask(adapter, data):
    reference = run(adapter, data).table
    with_masks = xw.evaluate(
        adapter, torch.utils.data.DataLoader(Pictures(data, True)), METHODS, METRICS, batch_size=4
    ).table
    pd.testing.assert_frame_equal(with_masks, reference)
    plain = xw.evaluate(adapter, Pictures(data, False), ["saliency"], {"road": {"percentiles": (50,)}})
    assert plain.table["metric"].nunique() == 4 and len(plain.table) == 4 * N
    with pytest.raises(xw.InputError, match="masks"):
        xw.evaluate(adapter, Pictures(data, False), ["saliency"], ["pointing_game"])


def test_bad_arguments_give_clear_errors(adapter, data):
    images, labels, masks = data
    with pytest.raises(xw.MethodError, match="unknown metric"):
        xw.evaluate(adapter, images, ["saliency"], ["faithfulness"])
    with pytest.raises(xw.MethodError, match="unknown method"):
        xw.evaluate(adapter, images, ["nope"], ["road"])
    with pytest.raises(xw.InputError, match="labels"):
        xw.evaluate(adapter, images, ["saliency"], ["road"], target="label")
    with pytest.raises(xw.XAIError, match="executor"):
        xw.evaluate(adapter, images, ["saliency"], ["road"], executor="spark")


def test_ray_is_optional():
    try:
        import ray  # noqa: F401
    except ImportError:
        from xai_widgets.evaluation import RayExecutor

        with pytest.raises(xw.XAIError, match="pip install"):
            RayExecutor()
    else:  # pragma: no cover - only where the ray extra is installed
        pytest.skip("ray is installed: its run is covered by the benchmark")


def test_dask_starts_without_changing_the_callers_environment(dask_executor):
    assert dask_executor.environ_after == dask_executor.environ_before
    assert dask_executor.threads == max(1, (os.cpu_count() or 1) // 2)
    threads = dask_executor.client.run(lambda: (os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()))
    assert set(threads.values()) == {(str(dask_executor.threads), dask_executor.threads)}


def test_dask_equals_in_process_even_when_a_worker_is_killed_mid_run(adapter, data, dask_executor):
    from xai_widgets.evaluation.executors import SHARDS_PER_WORKER

    # one shard per image, more than the executors' window of shards in flight: shards are submitted as others
    # finish, also after the kill
    assert N > SHARDS_PER_WORKER * len(dask_executor.client.scheduler_info()["workers"])
    spec = ModelSpec.of(adapter)
    assert spec.factory is SmallCNN  # the model travels as (class, state dict), never as a module
    reference = run(adapter, data).table
    killed = []

    def kill_one_worker(done: int, total: int) -> None:
        if done == 1 and not killed:
            pids = dask_executor.client.run(os.getpid)
            killed.append(next(iter(pids.values())))
            os.kill(killed[0], signal.SIGKILL)

    before = dict(os.environ)
    images, labels, masks = data
    result = xw.evaluate(
        adapter,
        images,
        METHODS,
        METRICS,
        labels=labels,
        masks=masks,
        batch_size=4,
        shard_size=1,
        executor=dask_executor,
        progress=kill_one_worker,
    )
    assert killed and dict(os.environ) == before
    table = result.table.sort_values(["method", "index", "metric"]).reset_index(drop=True)
    expected = reference.sort_values(["method", "index", "metric"]).reset_index(drop=True)
    assert not table.duplicated(["index", "method", "metric"]).any()
    pd.testing.assert_frame_equal(table.drop(columns="value"), expected.drop(columns="value"))
    torch.testing.assert_close(
        torch.tensor(table["value"].to_numpy()),
        torch.tensor(expected["value"].to_numpy()),
        rtol=1e-6,
        atol=1e-7,
    )


def test_alignment_sufficiency_insertion_and_energy_rows_match_the_metrics(adapter, data):
    images, labels, masks = data
    metrics = {"input_alignment": {}, "sufficiency": {"ks": (10, 50)}, "insertion": {"steps": 4}}
    result = xw.evaluate(
        adapter,
        images[:4],
        ["saliency"],
        {**metrics, "energy_pointing_game": {}},
        labels=labels[:4],
        masks=masks[:4],
    )
    x = adapter.preprocess(images[:4])
    explanation = xw.explain(adapter, x, labels[:4], "saliency")
    alignment = xw.metrics.input_alignment(explanation, x, null_samples=1)
    torch.testing.assert_close(
        torch.tensor(result.values("saliency", "input_alignment").to_numpy()), alignment.cosine
    )
    survived = xw.metrics.sufficiency(
        adapter, x, explanation, labels[:4], ks=(10, 50), controls=False
    ).map.survived
    assert result.values("saliency", "sufficiency").tolist() == survived.double().mean(1).tolist()
    energy = result.values("saliency", "energy_pointing_game")
    assert ((energy >= 0) & (energy <= 1)).all()
    assert (
        (result.values("saliency", "insertion_auc") >= 0) & (result.values("saliency", "insertion_auc") <= 1)
    ).all()


def test_a_shards_payload_pickles_only_its_own_pictures():
    """A slice is a view of the whole data set's storage; the task must carry a copy (Dask pickles it)."""
    import pickle

    from xai_widgets.evaluation.shards import TensorSource

    source = TensorSource(torch.rand(200, 3, 16, 16), torch.zeros(200), torch.zeros(200, 16, 16))
    whole = len(pickle.dumps(source.images))
    assert len(pickle.dumps(source.payload(0, 10))) < whole / 10
