"""The numba-rnn command line."""
import subprocess
import sys

import pytest

from numba_rnn.cli import main


def test_demo_prints_norms_and_writes_the_figure(tmp_path, capsys):
    assert main(["demo", "--seq-len", "30", "--hidden", "16", "--batch", "4",
                 "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "rho=0.8" in text and "rho=1.2" in text
    assert (tmp_path / "demo_grad_norms.png").stat().st_size > 10_000


def test_demo_shows_vanishing_below_one(tmp_path, capsys):
    main(["demo", "--seq-len", "60", "--radii", "0.5", "--out", str(tmp_path)])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("rho=0.5"))
    ratio = float(line.split("ratio=")[1].split()[0])
    assert ratio < 0.5 ** 40                                   # ≈ 0.5^59, far below 1


def test_bad_arguments_exit_nonzero(tmp_path):
    assert main(["demo", "--seq-len", "0", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit):
        main(["nosuchcommand"])


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "numba_rnn", "--help"], capture_output=True,
                         text=True, check=True)
    assert "demo" in res.stdout
