"""engine.errors: one set of error types, recognised by type where they become data;
the worker process's start-up (engine.worker)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from engine.errors import Cancelled, InputError, WeightsError
from engine.jobs import ErrorKind
from engine.worker import failure_for

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_weights_errors_from_the_loader_are_the_shared_type(tmp_path):
    from engine.weights import load_weights

    try:
        load_weights(str(tmp_path / "missing.h5"), models_dir=tmp_path)
    except WeightsError as e:
        assert failure_for("j1", e).kind == ErrorKind.WEIGHTS
    else:
        raise AssertionError("a missing file must raise WeightsError")


def test_errors_map_by_type_not_by_name():
    class WeightsError(RuntimeError):  # same name, another type: a bug, not a host problem
        pass

    assert failure_for("j", WeightsError("x")).kind == ErrorKind.INTERNAL
    assert failure_for("j", InputError("bad photo")).kind == ErrorKind.BAD_INPUT
    assert failure_for("j", Cancelled()).kind == ErrorKind.CANCELLED
    assert failure_for("j", ValueError("size")).kind == ErrorKind.BAD_SETTINGS


def test_errors_module_imports_nothing_heavy():
    code = ("import sys, engine.errors; "
            "bad = [m for m in ('numpy', 'h5py', 'keras', 'tensorflow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True, timeout=60)


def test_worker_loads_the_configured_network():
    from engine.config import WeightsSettings
    from engine.worker import WorkerOptions, real_engine

    engine = real_engine(WorkerOptions(weights=WeightsSettings(source="random"), network="vgg16"))
    assert engine.weights.network == "vgg16"
