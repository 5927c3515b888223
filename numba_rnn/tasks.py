"""Built-in tasks: data generated on the fly or read from files every Python ships.

Each task is a data source for :func:`numba_rnn.train.fit` (``batch(rng, n)``), knows
the model it needs (``make_model``), its baseline loss, a fixed validation and test
set, and (where it applies) an accuracy.

- :class:`AddingProblem` (Hochreiter & Schmidhuber 1997): many-to-one regression.
- :class:`CopyMemory` (Arjovsky, Shah & Bengio 2016): many-to-many classification.
- :class:`CharCorpus`: character-level language modelling on the standard library's
  own source code, streamed for truncated BPTT.
- :class:`NumberWords`: seq2seq, a number's digits → its English words.
"""
import glob
import os

import numpy as np

from .models import ManyToMany, ManyToOne, OneToMany, Seq2Seq


class Task:
    """Common interface; subclasses fill in the data and the model."""

    name = "task"
    baseline_loss = float("nan")
    #: keyword arguments of ``make_model`` a task fixes for its own data
    model_defaults = {}

    def batch(self, rng, batch_size):
        raise NotImplementedError

    def validation(self, n_batches, batch_size):
        """A fixed validation set (seeded apart from training data)."""
        rng = np.random.default_rng(10_000 + self.seed)
        return [self.batch(rng, batch_size) for _ in range(n_batches)]

    def test_set(self, n_batches=8, batch_size=128):
        """A fixed test set (seeded apart from training and validation data)."""
        rng = np.random.default_rng(20_000 + self.seed)
        return [self.batch(rng, batch_size) for _ in range(n_batches)]

    def accuracy(self, model, batches):
        """Task accuracy on ``batches``, or None when the task has none."""
        return None


class AddingProblem(Task):
    """The adding problem: T steps of (value, marker); the target is the sum of the
    two marked values (one marker in each half). Predicting the constant 1 gives MSE
    Var(u₁ + u₂) = 1/6 ≈ 0.167 — the baseline.

    x: (T, N, 2), y: (N, 1); model: :class:`ManyToOne` with MSE.
    """

    name = "adding"
    baseline_loss = 1.0 / 6.0

    def __init__(self, seq_len=50, seed=0):
        if seq_len < 2:
            raise ValueError(f"seq_len must be ≥ 2 for the adding problem, got {seq_len}")
        self.seq_len, self.seed = int(seq_len), seed

    def batch(self, rng, batch_size):
        T, N = self.seq_len, batch_size
        x = np.zeros((T, N, 2))
        x[:, :, 0] = rng.random((T, N))
        half = T // 2
        first = rng.integers(0, half, N)
        second = rng.integers(half, T, N)
        cols = np.arange(N)
        x[first, cols, 1] = 1.0
        x[second, cols, 1] = 1.0
        y = (x[first, cols, 0] + x[second, cols, 0])[:, None]
        return {"x": x, "y": y}

    def make_model(self, hidden_size=128, **kw):
        return ManyToOne(2, hidden_size, 1, loss="mse", **kw)


class CopyMemory(Task):
    """Copy memory: 10 symbols from an alphabet of 8, T blanks, a delimiter, then the
    model must reproduce the 10 symbols. The best memoryless strategy (blanks, then a
    uniform guess over 8 symbols) has mean cross-entropy 10·ln 8 / (T + 20) — the
    baseline. Classes: 0 blank, 1–8 symbols, 9 delimiter.

    x: (T+20, N, 10) one-hot, y: (T+20, N); model: :class:`ManyToMany`, mean per step.
    """

    name = "copy"
    n_symbols, n_copy = 8, 10
    model_defaults = {"reduction": "mean"}

    def __init__(self, seq_len=50, seed=0):
        if seq_len < 1:
            raise ValueError(f"seq_len must be ≥ 1, got {seq_len}")
        self.seq_len, self.seed = int(seq_len), seed
        self.baseline_loss = self.n_copy * np.log(self.n_symbols) / (self.seq_len + 2 * self.n_copy)

    def batch(self, rng, batch_size):
        T, K, N = self.seq_len, self.n_copy, batch_size
        total = T + 2 * K
        symbols = rng.integers(1, self.n_symbols + 1, (K, N))
        ids = np.zeros((total, N), dtype=np.int64)
        ids[:K] = symbols
        ids[T + K - 1] = self.n_symbols + 1                 # delimiter: "now recall"
        y = np.zeros((total, N), dtype=np.int64)
        y[T + K:] = symbols
        return {"x": np.eye(self.n_symbols + 2)[ids], "y": y}

    def make_model(self, hidden_size=128, **kw):
        return ManyToMany(self.n_symbols + 2, hidden_size, self.n_symbols + 2,
                          loss="cross_entropy", **kw)

    def accuracy(self, model, batches):
        """Fraction of the recalled symbols that are right."""
        right = total = 0
        for b in batches:
            pred, _ = model.forward(b["x"])
            K = self.n_copy
            right += int((pred[-K:].argmax(-1) == b["y"][-K:]).sum())
            total += b["y"][-K:].size
        return right / total


def stdlib_text(max_chars=2_000_000):
    """Source text of the Python standard library (sorted file order, deterministic)."""
    root = os.path.dirname(os.__file__)
    files = sorted(glob.glob(os.path.join(root, "*.py")))
    chunks, size = [], 0
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        chunks.append(text)
        size += len(text)
        if size >= max_chars:
            break
    if not chunks:
        raise RuntimeError(f"no standard-library sources found under {root}")
    return "".join(chunks)[:max_chars]


class CharCorpus(Task):
    """Character-level language modelling on the standard library's own source.

    Characters outside printable ASCII (and newline) map to ``"?"``. The text is cut
    into ``batch_size`` parallel streams; consecutive calls of :meth:`batch` continue
    them (stateful training, truncated BPTT), ``seq_len`` steps at a time. The last
    10 % of the text is the test set. Baseline: the unigram entropy (nats/char).

    x: (seq_len, N, V) one-hot of char t, y: (seq_len, N) id of char t+1; model:
    :class:`OneToMany` (mean cross-entropy per character), which can :meth:`generate`.
    """

    name = "char"
    model_defaults = {"reduction": "mean"}

    def __init__(self, seq_len=100, max_chars=1_000_000, seed=0, text=None):
        self.seq_len, self.seed = int(seq_len), seed
        text = stdlib_text(max_chars) if text is None else text
        self.vocab = ["\n"] + [chr(c) for c in range(32, 127)]
        lookup = np.full(0x110000, self.vocab.index("?"), dtype=np.int64)
        for i, ch in enumerate(self.vocab):
            lookup[ord(ch)] = i
        ids = lookup[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
        split = int(0.9 * len(ids))
        self.train_ids, self.test_ids = ids[:split], ids[split:]
        counts = np.bincount(self.train_ids, minlength=len(self.vocab))
        p = counts[counts > 0] / counts.sum()
        self.baseline_loss = float(-(p * np.log(p)).sum())
        self._cursor = None

    @property
    def vocab_size(self):
        return len(self.vocab)

    def _streams(self, ids, batch_size, cursor):
        seg = (len(ids) - 1) // batch_size
        if seg < self.seq_len:
            raise ValueError(f"text too short for {batch_size} streams of {self.seq_len} steps")
        starts = np.arange(batch_size) * seg + cursor
        t = starts[None, :] + np.arange(self.seq_len)[:, None]          # (T, N)
        nxt = cursor + self.seq_len
        return ids[t], ids[t + 1], (nxt if nxt + self.seq_len <= seg else 0)

    def batch(self, rng, batch_size):
        """The next ``seq_len`` characters of each of ``batch_size`` streams.

        ``continues`` is False at the start of each pass over the text.
        """
        if self._cursor is None or self._cursor[0] != batch_size:
            self._cursor = (batch_size, 0)
        cursor = self._cursor[1]
        x, y, nxt = self._streams(self.train_ids, batch_size, cursor)
        self._cursor = (batch_size, nxt)
        # "continues": whether the streams go on from the previous batch (a stateful
        # trainer carries the hidden state only then)
        return {"x": np.eye(self.vocab_size)[x], "y": y, "continues": cursor != 0}

    def get_state(self):
        return {"order": np.array(self._cursor or (0, 0)), "pos": 0}

    def set_state(self, st):
        n, c = (int(v) for v in st["order"])
        self._cursor = (n, c) if n else None

    def _fixed(self, ids, n_batches, batch_size):
        out, cursor = [], 0
        for _ in range(n_batches):
            x, y, cursor = self._streams(ids, batch_size, cursor)
            out.append({"x": np.eye(self.vocab_size)[x], "y": y})
        return out

    def validation(self, n_batches, batch_size):
        return self._fixed(self.test_ids[: len(self.test_ids) // 2], n_batches, batch_size)

    def test_set(self, n_batches=8, batch_size=32):
        return self._fixed(self.test_ids[len(self.test_ids) // 2:], n_batches, batch_size)

    def make_model(self, hidden_size=256, **kw):
        kw.pop("bidirectional", None)
        return OneToMany(self.vocab_size, hidden_size, loss="cross_entropy", **kw)

    def encode(self, text):
        return np.array([self.vocab.index(c) if c in self.vocab else self.vocab.index("?")
                         for c in text])

    def decode(self, ids):
        return "".join(self.vocab[i] for i in np.asarray(ids).ravel())

    def accuracy(self, model, batches):
        """Next-character accuracy."""
        right = total = 0
        for b in batches:
            pred, _ = model.forward(b["x"])
            right += int((pred.argmax(-1) == b["y"]).sum())
            total += b["y"].size
        return right / total


_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n):
    """English words for 0 ≤ n ≤ 9999, e.g. 4021 → four thousand twenty one."""
    if n < 20:
        return [_ONES[n]]
    words = []
    if n >= 1000:
        words += [_ONES[n // 1000], "thousand"]
        n %= 1000
        if n == 0:
            return words
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return words
    if n >= 20:
        words.append(_TENS[n // 10 - 2])
        if n % 10:
            words.append(_ONES[n % 10])
    elif n > 0 or not words:
        words.append(_ONES[n])
    return words


class NumberWords(Task):
    """Seq2seq: the digits of a number 0–9999 → its English words, then ``<eos>``.

    Source: one-hot digits (T_src ≤ 4, padded, ``src_lengths``); target: word ids
    (T_tgt ≤ 7 incl. ``<eos>``, ``tgt_lengths``). Numbers are split 80/20 into
    training and held-out test numbers, so the test measures generalisation to
    numbers never seen. Accuracy = exact match of the whole decoded word sequence.
    Baseline: the cross-entropy of predicting each target word from its overall
    frequency (nats per target token).
    """

    name = "numbers"
    model_defaults = {"reduction": "mean"}

    def __init__(self, seed=0, max_number=9999):
        self.seed = seed
        self.words = ["<bos>", "<eos>", *_ONES, *_TENS, "hundred", "thousand"]
        self.index = {w: i for i, w in enumerate(self.words)}
        order = np.random.default_rng(1234).permutation(max_number + 1)
        cut = int(0.8 * len(order))
        self.train_numbers, self.test_numbers = np.sort(order[:cut]), np.sort(order[cut:])
        ids = np.concatenate([self._target(n) for n in self.train_numbers])
        counts = np.bincount(ids, minlength=len(self.words))
        p = counts[counts > 0] / counts.sum()
        self.baseline_loss = float(-(p * np.log(p)).sum())

    def _target(self, n):
        return np.array([self.index[w] for w in number_words(int(n))] + [1])  # + <eos>

    def encode(self, numbers):
        """Source one-hots (4, N, 10), target ids (7, N) and both lengths."""
        numbers = np.asarray(numbers)
        N = len(numbers)
        src_ids = np.zeros((4, N), dtype=np.int64)
        tgt = np.zeros((7, N), dtype=np.int64)
        src_len, tgt_len = np.empty(N, dtype=np.int64), np.empty(N, dtype=np.int64)
        for j, n in enumerate(numbers):
            digits = [int(c) for c in str(int(n))]
            src_ids[: len(digits), j] = digits
            src_len[j] = len(digits)
            t = self._target(n)
            tgt[: len(t), j] = t
            tgt_len[j] = len(t)
        return {"src": np.eye(10)[src_ids], "tgt": tgt, "src_lengths": src_len,
                "tgt_lengths": tgt_len}

    def batch(self, rng, batch_size):
        return self.encode(rng.choice(self.train_numbers, batch_size))

    def validation(self, n_batches, batch_size):
        rng = np.random.default_rng(10_000 + self.seed)
        return [self.encode(rng.choice(self.train_numbers, batch_size))
                for _ in range(n_batches)]

    def test_set(self, n_batches=None, batch_size=500):
        nums = self.test_numbers
        return [self.encode(nums[i:i + batch_size]) for i in range(0, len(nums), batch_size)]

    def make_model(self, hidden_size=128, num_layers=1, bidirectional=False, **kw):
        kw.pop("dropout", None)
        return Seq2Seq(10, len(self.words), hidden_size, num_layers=num_layers,
                       bidirectional=bidirectional, bos=0, **kw)

    def accuracy(self, model, batches):
        """Exact match of the greedy decoding (words and ``<eos>``)."""
        right = total = 0
        for b in batches:
            out = model.decode(b["src"], 7, src_lengths=b["src_lengths"], eos=1)
            for j in range(out.shape[1]):
                L = b["tgt_lengths"][j]
                right += bool(np.array_equal(out[:L, j], b["tgt"][:L, j]))
                total += 1
        return right / total

    def words_of(self, ids):
        out = []
        for i in ids:
            if i == 1:
                break
            out.append(self.words[i])
        return " ".join(out)


TASKS = {"adding": AddingProblem, "copy": CopyMemory, "char": CharCorpus,
         "numbers": NumberWords}


def make_task(name, **kwargs):
    """``make_task("adding", seq_len=100)``."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {name!r}")
    return TASKS[name](**kwargs)
