"""Which device the engine runs on, chosen once per engine process, and the
convolution precision that suits it.

`configure(choice)` takes "auto" (a GPU when the backend finds one), "gpu" or
"cpu"; for "auto" or no argument, STYLEBOT_DEVICE can name one. Call it before
the network is built, since Keras creates the weights on the device chosen here
(the CLI does this from --device / [engine] device; Engine.describe() and the
first step do it with STYLEBOT_DEVICE otherwise). When no GPU is found the engine
falls back to the CPU and says so in one log line, with the reason.

The optimiser runs as a compiled loop on the device (engine/optimize.py,
`DeviceLoops`) on GPUs and CPUs alike. On a GPU it keeps the host out of every
step. On a 2-core CPU it costs 1-7 % more per evaluation than the host loop
(optimize.lbfgs, NumPy) and reaches the same loss per evaluation at the default
style strength, but its line search keeps strong styles from oscillating, where
the host loop's unit steps ended 2x higher; SciPy's L-BFGS-B, the host loop
before that, took twice as long per evaluation at 512 px. STYLEBOT_LOOP=host
brings back the host loops (NumPy L-BFGS and Adam), for comparison.

Imports go one way: this module asks engine.backends to find and select devices;
the backends never import it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from engine import backends
from engine.jobs import DEVICES

log = logging.getLogger(__name__)

ENV_DEVICE = "STYLEBOT_DEVICE"
# "device" or "host": force the optimiser loop (benchmarks compare the two).
ENV_LOOP = "STYLEBOT_LOOP"


@dataclass(frozen=True)
class Device:
    backend: str  # tensorflow | jax | torch
    kind: str  # "gpu" | "cpu"
    name: str  # "NVIDIA H100 80GB HBM3", "AMD EPYC (2 cores)"
    requested: str  # what was asked for: auto | gpu | cpu

    def label(self) -> str:
        """What the bot shows: 'GPU (NVIDIA H100 80GB HBM3)' or 'CPU (AMD EPYC, 2 cores)'."""
        return f"{self.kind.upper()} ({self.name})"

    def device_loop(self, optimizer: str) -> bool:
        """Run the optimiser as compiled chunks on the device, on a GPU and on the CPU
        alike: no host round trip per step, and its L-BFGS (Armijo backtracking spread
        over iterations) converges where the host loop's plain L-BFGS oscillates at
        strong style weights. STYLEBOT_LOOP=host selects the host loop."""
        return os.environ.get(ENV_LOOP, "").strip().lower() != "host"

    def precision(self, requested: str, flags: set[str] | None = None) -> str:
        """The convolution precision for `requested` ("auto" resolved here; see
        resolve_precision). `flags`: the CPU's feature flags, the host's by default."""
        return resolve_precision(requested, self.kind, host_cpu_flags() if flags is None else flags,
                                 self.backend)


_current: Device | None = None


def configure(choice: str | None = None) -> Device:
    """Choose the device (once per process; later calls return the first choice)."""
    global _current
    if not choice or choice == "auto":  # the environment may narrow "auto" down
        choice = os.environ.get(ENV_DEVICE) or "auto"
    choice = choice.strip().lower()
    if choice not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)} (got {choice!r})")
    if _current is not None:
        if choice not in ("auto", _current.kind):
            log.warning("device %s was asked for, but this engine process already runs on the %s; "
                        "the device is chosen once per process (restart the engine to change it)",
                        choice, _current.label())
        return _current
    module = backends.current()
    kind = "cpu"
    name = cpu_name()
    if choice != "cpu":
        gpus = module.gpu_names()
        if gpus:
            kind, name = "gpu", gpus[0]
        else:
            log.warning("no GPU found, running on the CPU (%s backend: %s)", module.NAME,
                        module.no_gpu_reason())
    module.use(kind)
    _current = Device(module.NAME, kind, name, choice)
    log.info("engine device: %s backend on the %s", module.NAME, _current.label())
    return _current


def current() -> Device:
    return _current if _current is not None else configure()


def cpu_name() -> str:
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    if not model:
        import platform

        model = platform.processor() or platform.machine() or "CPU"
    return f"{model}, {os.cpu_count() or '?'} cores"


# --- precision ------------------------------------------------------------------------------

# Backends whose CPU convolutions are slower in bfloat16 than in float32 even where
# the CPU has bfloat16 instructions: XLA's CPU backend (JAX) converts and runs them
# in float32 (measured by `python -m bench`: 0.88 s vs 0.82 s a 512-px step).
NO_FAST_CPU_BFLOAT16 = frozenset({"jax"})


def resolve_precision(requested: str, device: str, flags: set[str], backend: str = "tensorflow") -> str:
    """"auto" picks bfloat16 convolutions where they run natively (a GPU, or a CPU with
    AVX512_BF16 or AMX on a backend that uses them), else float32: emulated bfloat16
    is slower."""
    if requested != "auto":
        return requested
    if device != "cpu":
        return "bfloat16"
    if flags & {"avx512_bf16", "amx_bf16"} and backend not in NO_FAST_CPU_BFLOAT16:
        return "bfloat16"
    return "float32"


def cpu_flags(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def host_cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return cpu_flags(f.read())
    except OSError:  # not Linux: be conservative
        return set()


def _reset_for_tests() -> None:
    global _current
    _current = None
