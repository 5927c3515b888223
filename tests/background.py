"""Long subprocess tests, started as soon as pytest has collected them.

The CUDA simulator run and the fuzz drivers are whole pytest or Python processes of
their own (~3 minutes of one core together). The rest of the suite is mostly one core
busy at a time (Numba compiling, Python), so these run beside it on the second core
of a 2-core CI machine instead of after it: a test decorated with :func:`starts` has
its process started by ``conftest.pytest_collection_finish`` and, when the test itself
runs (after every other test: :func:`run_last`), waits for it and checks what it
printed. Run alone (``pytest -k``), the test starts its process itself. Processes
still running when the session ends are killed.
"""
import functools
import subprocess
import tempfile

_jobs = {}


class Job:
    """A started process whose stdout and stderr go to files (no pipe to fill up)."""

    def __init__(self, argv, **popen_kw):
        self.argv = argv
        self._out = tempfile.TemporaryFile(mode="w+")
        self._err = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(argv, stdout=self._out, stderr=self._err, text=True,
                                        **popen_kw)

    def wait(self, timeout):
        """``(returncode, stdout, stderr)`` once the process ends; killed (and
        ``subprocess.TimeoutExpired`` raised) after ``timeout`` seconds from now."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._out.seek(0)
        self._err.seek(0)
        return self.process.returncode, self._out.read(), self._err.read()

    def kill(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def starts(start):
    """Mark a test whose subprocess ``start()`` launches (returning a :class:`Job`, or
    None when the test will not need one): the process starts when collection ends, and
    the test gets it as its first argument, ``job``."""
    once = functools.cache(start)

    def decorate(test):
        @functools.wraps(test)
        def run(*args, **kwargs):
            return test(once(), *args, **kwargs)
        run.__signature__ = _without_first(test)
        run.background_start = once
        return run
    return decorate


def _without_first(test):
    import inspect
    sig = inspect.signature(test)
    return sig.replace(parameters=list(sig.parameters.values())[1:])


def _waits(item):
    return getattr(getattr(item, "function", None), "background_start", None) is not None


def run_last(items):
    """Move the tests that wait on a background process to the end (in place, order
    otherwise kept): collected in file order, the simulator's test came early and the
    whole suite stood still while it waited (164 s of a 336 s run)."""
    items[:] = [i for i in items if not _waits(i)] + [i for i in items if _waits(i)]


def start_collected(items):
    """Start the background process of every collected test that has one (once each)."""
    for item in items:
        start = getattr(getattr(item, "function", None), "background_start", None)
        if start is not None and not item.get_closest_marker("skip"):
            job = start()
            if job is not None:
                _jobs[id(job)] = job


def kill_all():
    for job in _jobs.values():
        job.kill()
