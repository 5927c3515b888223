"""Reliability, faults: kills at random moments (mid-checkpoint included) and full disks
never lose work; resuming reaches the weights of an uninterrupted run, bitwise.

Each training run is a real ``numba-rnn train`` process, killed with SIGKILL. Kills
inside a checkpoint write are injected by a driver that makes the k-th write die
half-way through (or between the write and the atomic rename).
"""
import errno
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from numba_rnn.train import load_checkpoint_arrays

STEPS = 1500
ARGS = ["train", "adding", "--seq-len", "20", "--hidden", "16", "--steps", str(STEPS),
        "--eval-every", "10", "--batch-size", "16", "--json"]

DRIVER = """
import os, signal, sys
import numpy as np
mode, k = sys.argv[1], int(sys.argv[2])
calls = [0]
real_savez, real_replace = np.savez, os.replace

def savez(f, **arrays):                 # die while writing the k-th checkpoint
    calls[0] += 1
    if mode == "mid-write" and calls[0] == k:
        f.write(b"PK\\x03\\x04" + bytes(200))
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_savez(f, **arrays)

def replace(src, dst):                  # die after writing, before the rename
    if mode == "before-rename" and calls[0] == k:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(src, dst)

np.savez, os.replace = savez, replace
from numba_rnn.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _run(argv, timeout=300, **kw):
    return subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _train(ckpt, kill_after=None):
    """Run training to the end, or SIGKILL it after ``kill_after`` seconds."""
    p = _run(["-m", "numba_rnn", *ARGS, "--checkpoint", str(ckpt)])
    if kill_after is None:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        return True
    try:
        p.communicate(timeout=kill_after)
        return True                                 # finished before the kill
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.communicate()
        return False


def _params(path):
    meta, arrays = load_checkpoint_arrays(path)
    return meta["step"], {k: v for k, v in arrays.items() if k.startswith("param/")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.npz"
    t0 = time.perf_counter()
    _train(path)
    step, params = _params(path)
    assert step == STEPS
    return params, time.perf_counter() - t0


def _assert_same(params, ref):
    assert set(params) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(params[k], ref[k])


def test_sigkill_at_random_moments_then_resume_gives_the_same_weights(reference, tmp_path):
    ref, seconds = reference
    rng = np.random.default_rng(0)
    kills = 0
    for trial in range(4):
        ckpt = tmp_path / f"c{trial}.npz"
        t_kill = float(rng.uniform(0.3, seconds))
        while not _train(ckpt, kill_after=t_kill):        # kill, look, resume, kill again…
            kills += 1
            if ckpt.exists():
                step, _ = _params(ckpt)                   # always loadable
                assert 0 < step <= STEPS
            t_kill = float(rng.uniform(0.3, seconds))
        _assert_same(_params(ckpt)[1], ref)
    assert kills >= 2
    print(f"{kills} SIGKILLs, every resumed run reached the reference weights")


@pytest.mark.parametrize("mode", ["mid-write", "before-rename"])
def test_sigkill_inside_a_checkpoint_write_keeps_the_previous_one(reference, tmp_path, mode):
    ref, _ = reference
    ckpt = tmp_path / "c.npz"
    p = _run(["-c", DRIVER, mode, "7", *ARGS, "--checkpoint", str(ckpt)])
    p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL
    step, _ = _params(ckpt)                               # the 6th checkpoint, intact
    assert step == 60
    _train(ckpt)                                          # resume to the end
    _assert_same(_params(ckpt)[1], ref)


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    from numba_rnn.cli import main
    ckpt = tmp_path / "c.npz"
    calls = [0]
    real = np.savez

    def savez(f, **arrays):
        calls[0] += 1
        if calls[0] == 3:
            f.write(bytes(100))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(f, **arrays)
    monkeypatch.setattr(np, "savez", savez)
    args = ARGS[:ARGS.index("--steps")] + ["--steps", "100"] + ARGS[ARGS.index("--steps") + 2:]
    assert main([*args, "--checkpoint", str(ckpt)]) == 2
    assert "No space left on device" in capsys.readouterr().err
    step, _ = _params(ckpt)
    assert step == 20                                     # the 2nd checkpoint, intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]   # no temporary left behind
