"""Helper process pools: spawn-started, deaf to Ctrl-C (the main process reports it) and ended
with their parent, so no orphan keeps computing."""
from __future__ import annotations


def helper_pool(workers: int):
    """A spawn-started ``ProcessPoolExecutor`` whose processes ignore Ctrl-C (the main process
    alone reports it, in one line, then ``stop_pool`` ends them) and end with their parent if it
    is killed (Linux), so no orphan keeps computing."""
    import multiprocessing
    import signal
    import threading
    from concurrent.futures import ProcessPoolExecutor

    class HelperPool(ProcessPoolExecutor):
        def submit(self, *args, **kwargs):
            """The helper processes start here: they inherit an ignored SIGINT from their first
            instruction (a handler is not inherited, SIG_IGN is), so that Ctrl-C while they
            import (seconds) prints no traceback of theirs (issue 25: 25-37 lines)."""
            if threading.current_thread() is not threading.main_thread():
                return super().submit(*args, **kwargs)
            handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                return super().submit(*args, **kwargs)
            finally:
                signal.signal(signal.SIGINT, handler)

    return HelperPool(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_helper_started)


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
