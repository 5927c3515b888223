"""Parity with torch.nn.RNN (optional peer: skipped when torch is not installed)."""
import numpy as np
import pytest

import numba_rnn as nr

from .conftest import GRID, GRID_IDS

torch = pytest.importorskip("torch")


def _torch_pair(bidirectional, num_layers, nonlinearity, batch_first, seed=0):
    torch.manual_seed(seed)
    t_rnn = torch.nn.RNN(4, 6, num_layers=num_layers, nonlinearity=nonlinearity,
                         batch_first=batch_first, bidirectional=bidirectional).double()
    ours = nr.RNN(4, 6, num_layers=num_layers, nonlinearity=nonlinearity,
                  batch_first=batch_first, bidirectional=bidirectional, dtype=np.float64)
    ours.load_torch_state_dict(t_rnn.state_dict())
    return t_rnn, ours


@pytest.mark.parametrize("bidirectional,num_layers,nonlinearity,batch_first", GRID, ids=GRID_IDS)
def test_outputs_and_gradients_equal_torch(bidirectional, num_layers, nonlinearity, batch_first):
    t_rnn, ours = _torch_pair(bidirectional, num_layers, nonlinearity, batch_first)
    rng = np.random.default_rng(1)
    dirs = 2 if bidirectional else 1
    T, N = 7, 3
    x = rng.standard_normal((N, T, 4) if batch_first else (T, N, 4))
    h0 = rng.standard_normal((num_layers * dirs, N, 6))
    d_out = rng.standard_normal((N, T, dirs * 6) if batch_first else (T, N, dirs * 6))
    d_hn = rng.standard_normal(h0.shape)

    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0, requires_grad=True)
    t_out, t_hn = t_rnn(tx, th0)
    (t_out * torch.tensor(d_out)).sum().add((t_hn * torch.tensor(d_hn)).sum()).backward()

    out, h_n, cache = ours.forward(x, h0)
    grads, dx, dh0 = ours.backward(cache, d_out, d_hn)
    np.testing.assert_allclose(out, t_out.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(h_n, t_hn.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-11)
    np.testing.assert_allclose(dh0, th0.grad.numpy(), atol=1e-11)
    tgrads = {name: p.grad.numpy() for name, p in t_rnn.named_parameters()}
    for tname, (name, _) in ours._torch_names().items():
        if name is None:        # bias_hh: its gradient equals bias_ih's, which is ours
            np.testing.assert_allclose(tgrads[tname], tgrads["bias_ih" + tname[7:]])
            continue
        np.testing.assert_allclose(grads[name], tgrads[tname], atol=1e-11, err_msg=tname)


def test_unbatched_and_float32_equal_torch():
    t_rnn, ours64 = _torch_pair(True, 2, "tanh", False)
    ours = nr.RNN(4, 6, num_layers=2, bidirectional=True, dtype=np.float32)
    ours.load_torch_state_dict(t_rnn.state_dict())
    x = np.random.default_rng(0).standard_normal((9, 4))
    t_out, t_hn = t_rnn.float()(torch.tensor(x, dtype=torch.float32))
    out, h_n = ours(x.astype(np.float32))
    assert out.shape == tuple(t_out.shape) and h_n.shape == tuple(t_hn.shape)
    np.testing.assert_allclose(out, t_out.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(h_n, t_hn.detach().numpy(), atol=1e-5)


def test_torch_state_dict_round_trip():
    ours = nr.RNN(3, 5, num_layers=2, bidirectional=True, dtype=np.float64, seed=0)
    t_rnn = torch.nn.RNN(3, 5, num_layers=2, bidirectional=True).double()
    t_rnn.load_state_dict({k: torch.tensor(v) for k, v in ours.torch_state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    np.testing.assert_allclose(ours(x)[0], t_rnn(torch.tensor(x))[0].detach().numpy(),
                               atol=1e-12)


def test_lengths_equal_torch_packed_sequences():
    t_rnn, ours = _torch_pair(True, 2, "tanh", False)
    rng = np.random.default_rng(3)
    x, h0 = rng.standard_normal((6, 3, 4)), rng.standard_normal((4, 3, 6))
    lengths = np.array([6, 2, 4])
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths),
                                                     enforce_sorted=False)
    t_out, t_hn = t_rnn(packed, torch.tensor(h0))
    t_out, _ = torch.nn.utils.rnn.pad_packed_sequence(t_out, total_length=6)
    out, h_n = ours(x, h0, lengths=lengths)
    np.testing.assert_allclose(out, t_out.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(h_n, t_hn.detach().numpy(), atol=1e-12)
