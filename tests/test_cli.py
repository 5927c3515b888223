"""The numba-rnn command line."""
import subprocess
import sys

import pytest

from numba_rnn.cli import main


def test_bad_arguments_exit_nonzero(tmp_path):
    assert main(["train", "adding", "--steps", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["nosuchcommand"])


def test_python_dash_m_entry_point():
    res = subprocess.run([sys.executable, "-m", "numba_rnn", "--help"], capture_output=True,
                         text=True, check=True)
    assert "figures" in res.stdout and "train" in res.stdout


def _last_json(text):
    import json
    return json.loads(text.strip().splitlines()[-1])


@pytest.mark.parametrize("task,extra", [
    ("adding", ["--seq-len", "10"]),
    ("copy", ["--seq-len", "5"]),
    ("numbers", ["--bidirectional"]),
])
def test_train_json_has_the_promised_keys(task, extra, capsys):
    assert main(["train", task, "--steps", "20", "--hidden", "8", "--batch-size", "8",
                 "--eval-every", "10", "--json", *extra]) == 0
    res = _last_json(capsys.readouterr().out)
    for key in ("task", "steps", "seconds", "train_loss", "test_loss", "baseline_loss"):
        assert key in res
    assert res["task"] == task and res["steps"] == 20
    if task != "adding":
        assert 0.0 <= res["test_accuracy"] <= 1.0


def test_train_char_save_and_sample(tmp_path, capsys):
    path = tmp_path / "char.npz"
    assert main(["train", "char", "--steps", "6", "--hidden", "16", "--seq-len", "20",
                 "--tbptt", "10", "--batch-size", "4", "--json", "--save", str(path)]) == 0
    res = _last_json(capsys.readouterr().out)
    assert res["sample"].startswith("def ") and len(res["sample"]) == 204
    assert main(["sample", "--load", str(path), "--prime", "import ", "--length", "30"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("import ") and len(out.rstrip("\n")) >= 30


def test_train_checkpoint_resumes(tmp_path, capsys):
    ck = str(tmp_path / "ck.npz")
    args = ["train", "adding", "--seq-len", "8", "--hidden", "8", "--batch-size", "8",
            "--eval-every", "5", "--json", "--checkpoint", ck]
    assert main([*args, "--steps", "10"]) == 0
    capsys.readouterr()
    assert main([*args, "--steps", "15"]) == 0
    assert _last_json(capsys.readouterr().out)["steps"] == 15


def test_sample_refuses_a_non_char_model(tmp_path, capsys):
    from numba_rnn.models import ManyToOne
    path = tmp_path / "m.npz"
    ManyToOne(2, 4, 1, loss="mse").save(path)
    assert main(["sample", "--load", str(path)]) == 2
    assert "not a char model" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["bench", "--device", "cuda", "--shapes", "tiny", "--dtype", "float32"], "cuda"),
    (["sweep", "no-such-study"], "no built-in study"),
    (["sample", "--load", "/nonexistent/model.npz"], "No such file"),
])
def test_library_errors_become_one_clear_line(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
