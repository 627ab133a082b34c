"""The machine: a one-line description, CPU contention, peak memory, matmul peaks.

The benchmark runs on shared machines, so every timed section also records how
much CPU *other* processes took meanwhile (from /proc/stat minus our own
rusage): a number to read next to every timing.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from bench.flops import matmul_flops

# --- description ------------------------------------------------------------------------


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key and key not in info:
                info[key] = value.strip()
    except OSError:
        pass
    return info


def cpu_description() -> dict[str, object]:
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    model = info.get("model name") or platform.processor() or platform.machine()
    if info.get("cpu family"):
        model += f" (family {info['cpu family']}, model {info.get('model', '?')})"
    return {
        "model": model,
        "cores": cpu_count(),
        "mhz": info.get("cpu MHz"),
        "hypervisor": "hypervisor" in flags,
        "isa": [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
                if f in flags],
        "memory_gib": _mem_total_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def numpy_blas() -> dict[str, object]:
    """The BLAS NumPy uses: threadpoolctl when installed, else numpy.show_config's summary."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            p = pools[0]
            return {"library": p.get("internal_api"), "version": p.get("version"),
                    "threads": p.get("num_threads"), "architecture": p.get("architecture"),
                    "source": "threadpoolctl"}
    except ImportError:
        pass
    try:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return {"library": blas.get("name"), "version": blas.get("version"), "threads": None,
                "architecture": None, "source": "numpy.show_config"}
    except Exception:  # noqa: BLE001 - older NumPy: no dict mode
        return {"library": "unknown", "version": None, "threads": None, "architecture": None,
                "source": "none"}


def software() -> dict[str, str]:
    """Versions; imports Keras (and TensorFlow where that is the backend).

    Call it where they are loaded anyway. A GPU machine may have JAX or PyTorch and
    no TensorFlow at all (issue 5), so TensorFlow is only asked for when it runs.
    """
    import keras
    import numpy as np

    backend = keras.backend.backend()
    out = {"keras": keras.__version__, "keras_backend": backend, "numpy": np.__version__}
    if backend == "tensorflow":
        import tensorflow as tf

        out.update({"tensorflow": tf.__version__,
                    "tf_intra_op_threads": str(tf.config.threading.get_intra_op_parallelism_threads()
                                               or "auto"),
                    "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")})
    else:
        module = __import__(backend)
        out[backend] = module.__version__
    return out


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


# --- contention and memory ---------------------------------------------------------------


def _proc_stat_busy() -> float | None:
    """Seconds of CPU time the whole machine spent busy (incl. steal), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


@dataclass
class CpuMonitor:
    """Wall time, our CPU time and the CPU other processes took, over a section."""

    wall: float = 0.0
    own_cpu: float = 0.0
    others_cpu_share: float | None = None  # of all cores, 0..1
    _start: tuple = field(default=(), repr=False)

    def __enter__(self) -> Self:
        self._start = (time.perf_counter(), _own_cpu(), _proc_stat_busy())
        return self

    def __exit__(self, *exc) -> None:
        t0, own0, busy0 = self._start
        self.wall = time.perf_counter() - t0
        self.own_cpu = _own_cpu() - own0
        busy1 = _proc_stat_busy()
        if busy0 is not None and busy1 is not None and self.wall > 0:
            others = (busy1 - busy0) - self.own_cpu
            self.others_cpu_share = max(0.0, min(1.0, others / (self.wall * cpu_count())))

    def as_dict(self) -> dict[str, float | None]:
        return {"wall_s": self.wall, "own_cpu_s": self.own_cpu,
                "others_cpu_share": self.others_cpu_share}


def rss_mib() -> tuple[float | None, float | None]:
    """(current RSS, peak RSS) of this process in MiB, from /proc/self/status."""
    rss = hwm = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    except OSError:
        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return rss, hwm


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --- reference peaks ---------------------------------------------------------------------


def timed(fn, repeats: int, warmup: int = 0) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds (all threads) of each of `repeats` calls, after `warmup`.

    CPU time is the cross-check for shared machines: it grows with the work done
    rather than with the time other processes hold the cores.
    """
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return walls, cpus


def _peak_row(library: str, dtype: str, n: int, repeats: int, walls: list[float], cpus: list[float],
              monitor: CpuMonitor) -> dict[str, object]:
    flops = matmul_flops(n)
    med, best, cpu = statistics.median(walls), min(walls), statistics.median(cpus)
    return {"library": library, "dtype": dtype, "n": n, "repeats": repeats, "median_s": med,
            "gflops_median": flops / med / 1e9, "gflops_best": flops / best / 1e9,
            "cpu_median_s": cpu, "gflop_per_cpu_s": flops / cpu / 1e9,
            "others_cpu_share": monitor.others_cpu_share}


def _backend_matmul(n: int, dtype: str) -> Callable[[], object]:
    """A call that runs one compiled n x n matmul on the Keras backend's default device
    and waits for it (GPU calls return before the work is done)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        rng = tf.random.Generator.from_seed(0)
        a = tf.cast(rng.normal((n, n)), dtype)
        b = tf.cast(rng.normal((n, n)), dtype)
        matmul = tf.function(tf.linalg.matmul)
        return lambda: matmul(a, b)  # CPU ops are synchronous; GPU: .numpy() below would copy
    if backend == "jax":
        import jax

        ka, kb = jax.random.split(jax.random.PRNGKey(0))
        a = jax.random.normal(ka, (n, n)).astype(dtype)
        b = jax.random.normal(kb, (n, n)).astype(dtype)
        matmul = jax.jit(jax.numpy.matmul)
        return lambda: matmul(a, b).block_until_ready()
    if backend == "torch":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        gen = torch.Generator(device=device).manual_seed(0)
        a = torch.randn((n, n), generator=gen, device=device).to(getattr(torch, dtype))
        b = torch.randn((n, n), generator=gen, device=device).to(getattr(torch, dtype))
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

        def call() -> None:
            with torch.no_grad():
                torch.matmul(a, b)
            sync()

        return call
    raise RuntimeError(f"no matmul peak for Keras backend {backend!r}")


def backend_matmul_peak(n: int, dtype: str, repeats: int = 5, warmup: int = 2) -> dict[str, object]:
    """GFLOP/s of one compiled n x n matmul on the engine's Keras backend (median and
    best of `repeats`), labelled with the backend's name. The output is never copied
    back to NumPy: that would time the copy too."""
    import keras

    call = _backend_matmul(n, dtype)
    with CpuMonitor() as mon:
        walls, cpus = timed(call, repeats, warmup)
    return _peak_row(keras.backend.backend(), dtype, n, repeats, walls, cpus, mon)


def numpy_matmul_peak(n: int, repeats: int = 5, warmup: int = 2) -> dict[str, object]:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty_like(a)
    with CpuMonitor() as mon:
        walls, cpus = timed(lambda: np.matmul(a, b, out=out), repeats, warmup)
    return {**_peak_row("numpy", "float32", n, repeats, walls, cpus, mon), "blas": numpy_blas()}
