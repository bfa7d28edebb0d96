"""One Dask LocalCluster (2 worker processes, spawned) shared by every Dask test: starting one costs seconds."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def dask_executor():
    pytest.importorskip("distributed")
    from xai_widgets.evaluation import DaskExecutor

    before = dict(os.environ)
    executor = DaskExecutor(n_workers=2)
    executor.environ_before, executor.environ_after = before, dict(os.environ)
    yield executor
    executor.close()
