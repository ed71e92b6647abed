"""Helper process pools: spawn-started, deaf to Ctrl-C (the main process reports it) and ended
with their parent, so no orphan keeps computing."""
from __future__ import annotations


def helper_pool(workers: int):
    """A spawn-started ``ProcessPoolExecutor`` whose processes ignore Ctrl-C (the main process
    alone reports it, in one line, then ``stop_pool`` ends them) and end with their parent if it
    is killed (Linux), so no orphan keeps computing."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_helper_started)


def _helper_started() -> None:
    import ctypes
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:                                        # PR_SET_PDEATHSIG: SIGTERM when the parent dies
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def stop_pool(pool) -> None:
    """Cancel what ``pool`` has not started and end its processes now (after an error or Ctrl-C
    its results are not wanted, and an orphan would keep computing)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
