"""Workers that die with their master, so a killed launcher leaves nothing serving on its port.

Neither Uvicorn's nor Hypercorn's workers notice that their master is gone: they keep
accepting on the inherited socket, unsupervised and invisible to the harness or compose.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_master(master_pid: int) -> None:
    """In a worker (Linux): ask the kernel for SIGTERM when the master dies, even by SIGKILL.

    The signal follows the thread that forked us, which for every supervisor here is the
    master's main thread. A master that died before the call never sends it, hence the check.
    """
    if sys.platform != "linux" or os.getpid() == master_pid:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != master_pid:
        os.kill(os.getpid(), signal.SIGTERM)
