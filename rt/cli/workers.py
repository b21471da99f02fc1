"""`upsample`'s folder runs on worker processes (`--jobs`), each holding one Upsampler.

A stop (Ctrl-C, SIGTERM, SIGHUP, the parent's death) ends every worker with its hidden files removed;
a worker that dies (SIGKILL, the OOM killer) fails the unfinished files and ends the run.
"""
from __future__ import annotations

import os
import signal
import sys
import time

_worker = {"up": None, "run": None}  # in a worker: its Upsampler, and the function that upsamples a file
WORKER_EXIT_S = 10.0  # a stopped folder run waits up to this long for its workers to exit


_stop_state = {"in_hook": False, "landed": False, "resenders": []}


def _stop(signum, frame):
    """SIGTERM: unwind (hidden files are removed on the way out) instead of dying on the spot. Later
    SIGTERMs are ignored while it unwinds (a group kill and the parent's terminate() both send one: a
    second SystemExit inside a `finally` would skip the removal)."""
    if _stop_state["in_hook"]:
        return  # it landed in the hook that re-delivers a stop: the resender's next signal lands later
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _stop_state["landed"] = True
    raise SystemExit(128 + signum)


def _resend_stop():
    """SIGTERM to this process every 50 ms until one has landed in Python code."""
    while not _stop_state["landed"]:
        time.sleep(0.05)
        if not _stop_state["landed"]:
            os.kill(os.getpid(), signal.SIGTERM)


def _stop_landed_in_a_callback(info):
    """A stop raised inside a C callback (numba's compiler cache) cannot unwind from there and would
    be printed as an ignored traceback: deliver it again, from another thread, until it lands in
    Python code. A signal that lands in this hook itself (a loaded machine can run the resender
    before the hook returns) is dropped there, not raised: the next one lands."""
    if info.exc_type is not None and issubclass(info.exc_type, SystemExit):
        import threading

        _stop_state["in_hook"], _stop_state["landed"] = True, False
        try:
            resender = threading.Thread(target=_resend_stop, daemon=True, name="bandlift-stop")
            _stop_state["resenders"].append(resender)
            resender.start()
            signal.signal(signal.SIGTERM, _stop)  # _stop ignored further SIGTERMs: this one must land
        finally:
            _stop_state["in_hook"] = False
        return
    sys.__unraisablehook__(info)


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this worker when its parent dies, however it dies (SIGKILL, OOM killer)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return  # not Linux: the parent's own stop handling still ends the workers
    if os.getppid() != parent:  # the parent died before the call
        os.kill(os.getpid(), signal.SIGTERM)


STOPS = {signal.SIGTERM, signal.SIGHUP}


def _init_worker(run, model, rate, block, provider, threads, parent=None):
    # A stop raised inside a native module's initialisation (soxr's nanobind, onnxruntime's pybind11)
    # aborts the process with a C++ traceback: the stops wait (masked) until those imports are done.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOPS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops the workers
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)  # a closed terminal stops as SIGTERM does
    if parent is not None:
        _die_with_parent(parent)
    sys.unraisablehook = _stop_landed_in_a_callback
    try:
        import soxr  # noqa: F401 - the writer's true-peak meter, imported under the mask

        from bandlift.rt.api import Upsampler

        _worker["up"] = Upsampler(model, out_rate=rate, block=block, provider=provider, threads=threads)
        _worker["run"] = run
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPS)  # a stop that came meanwhile lands here
    except SystemExit as stop:  # stopped while starting: nothing written yet, nothing to print
        os._exit(stop.code if isinstance(stop.code, int) else 1)


def _job(job):
    from bandlift.rt.io.files import AudioFileError

    src, dst, kwargs = job
    try:
        return _worker["run"](_worker["up"], src, dst, **kwargs)
    except (AudioFileError, ValueError) as exc:
        return {"input": str(src), "error": str(exc)}
    except SystemExit as stop:  # SIGTERM mid-file: its hidden files are gone; leave the pool at once
        os._exit(stop.code)


def _after_a_dead_worker(futures: dict) -> list[dict]:
    """The results of a folder run whose worker died: each finished file's, and each unfinished one
    reported as failed (its hidden files removed); the run stops there."""
    from bandlift.rt.io.files import remove_hidden

    results = []
    for fut, (src, dst) in futures.items():
        try:
            results.append(fut.result(timeout=0))
            continue
        except BaseException:  # noqa: BLE001 - broken, cancelled: not upsampled
            pass
        remove_hidden(dst)
        results.append({"input": str(src), "error": f"{src}: not upsampled: a worker process died (killed, or "
                                                    "out of memory?) and the run stopped"})
    return results


def _remove_unfinished(futures: dict) -> None:
    """The hidden files of every file a stopped run did not finish."""
    from bandlift.rt.io.files import remove_hidden

    for fut, (_, dst) in futures.items():
        if not fut.done() or fut.cancelled() or fut.exception(timeout=0) is not None:
            remove_hidden(dst)


def run_in_workers(run, args, jobs, options, bar) -> list[dict]:
    """Upsample `jobs` ((input, output) pairs) on `args.jobs` worker processes, each calling
    `run(upsampler, input, output, **options)` (pickled by reference); one result dict per file."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    results = []
    pool = ProcessPoolExecutor(args.jobs, initializer=_init_worker,
                               initargs=(run, args.model, args.rate, args.block, args.provider, args.threads,
                                         os.getpid()))
    futures = {}
    try:
        for s, d in jobs:
            futures[pool.submit(_job, (s, d, options))] = (s, d)
        try:
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update()
        except BrokenProcessPool:  # a worker was killed (OOM killer, SIGKILL) or exited
            pool.shutdown(wait=True, cancel_futures=True)  # the others are stopped: wait for them
            results = _after_a_dead_worker(futures)
    except BaseException:
        # shutdown(wait=False) forgets the pool's manager thread: keep it to join below
        manager = getattr(pool, "_executor_manager_thread", None)
        pool.shutdown(wait=False, cancel_futures=True)
        workers = multiprocessing.active_children()
        for worker in workers:
            worker.terminate()  # SIGTERM: it removes its hidden files and exits
        deadline = time.monotonic() + WORKER_EXIT_S
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if worker.is_alive():  # too slow to unwind (a loaded machine): it goes now
                worker.kill()
                worker.join(1.0)
        _remove_unfinished(futures)  # what a worker did not get to remove
        if manager is not None and not any(worker.is_alive() for worker in workers):
            # join the pool's manager thread before the interpreter exits: Python 3.11's exit hook
            # otherwise races it to the pool's wake-up pipe (an EBADF traceback, seen in CI; a second
            # shutdown() cannot join it: the first one dropped the thread)
            manager.join(WORKER_EXIT_S)
        raise
    pool.shutdown()
    return results
