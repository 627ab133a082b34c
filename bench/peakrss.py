"""`python -m bench.peakrss CMD ...`: run CMD, then print one JSON line with its exit
code, peak resident memory and CPU time.

Why a separate small process: a child's ru_maxrss counts the pages it had between
fork and exec, i.e. its parent's whole resident set. Measured straight from the
benchmark (2 GB of baselines by then) every child looked 2 GB large; measured from
this ~20 MB parent the figure is the command's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m bench.peakrss CMD [ARG ...]", file=sys.stderr)
        return 2
    proc = subprocess.Popen(argv)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    print(json.dumps({"exit_code": proc.returncode, "peak_rss_mib": usage.ru_maxrss / 1024,  # KiB on Linux
                      "cpu_s": usage.ru_utime + usage.ru_stime}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
