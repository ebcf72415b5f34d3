"""unmix.training.solver.Adam: torch's Adam update, twin parameters, NNabla-compatible state."""
import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
import numpy as np
import pytest

from unmix.training.solver import Adam

pytestmark = pytest.mark.nnabla


def torch_adam(p, grads, lr, weight_decay, beta1=0.9, beta2=0.999, eps=1e-8):
    """torch.optim.Adam's update (torch/optim/adam.py, single tensor), in float64."""
    p, m, v = np.array(p, np.float64), 0.0, 0.0
    for t, grad_of in enumerate(grads, start=1):
        g = grad_of(p) + weight_decay * p
        m = m + (1 - beta1) * (g - m)
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1**t) * m / (np.sqrt(v) / np.sqrt(1 - beta2**t) + eps)
    return p


def quadratic(target, c):
    return lambda p: 2 * c * (p - target)


def steps(solver, p, loss, n, weight_decay):
    for _ in range(n):
        loss.forward()
        solver.zero_grad()
        loss.backward()
        solver.weight_decay(weight_decay)
        solver.update()
    return p.d.copy()


def problem(start, target, c):
    p = nn.Variable.from_numpy_array(np.array(start, np.float32), need_grad=True)
    t = nn.Variable.from_numpy_array(np.array(target, np.float32))
    cv = nn.Variable.from_numpy_array(np.array(c, np.float32))
    return p, F.sum(F.squared_error(p, t) * cv)


def test_adam_with_weight_decay_is_torchs():
    # torch.optim.Adam(lr=0.1, weight_decay=0.01) on sum(c * (p - t)^2), 5 steps (torch 2.13's numbers)
    start, target, c = [1.0, -2.0, 0.5], [0.3, 0.1, -0.4], [1.0, 2.0, 3.0]
    p, loss = problem(start, target, c)
    solver = Adam(alpha=0.1)
    solver.set_parameters({"p": p})
    got = steps(solver, p, loss, 5, 0.01)
    np.testing.assert_allclose(got, [0.5144957900047302, -1.502774953842163, 0.009451113641262054], atol=1e-6)
    np.testing.assert_allclose(got, torch_adam(start, [quadratic(np.array(target), np.array(c))] * 5, 0.1, 0.01),
                               atol=1e-6)


def test_eps_where_nnabla_adam_differs():
    # gradients of 1e-7: torch's update uses eps 1e-8, NNabla's effectively 3.2e-7 at step 1
    start, target, c = [0.0, 0.0], [5e-8, -2e-7], [1.0, 1.0]
    target64 = np.array(target, np.float32).astype(np.float64)
    expected = torch_adam(start, [quadratic(target64, np.array(c))] * 2, 1e-3, 0.0)
    p, loss = problem(start, target, c)
    mine = Adam(alpha=1e-3)
    mine.set_parameters({"p": p})
    np.testing.assert_allclose(steps(mine, p, loss, 2, 0.0), expected, rtol=1e-5)
    p, loss = problem(start, target, c)
    theirs = S.Adam(alpha=1e-3)
    theirs.set_parameters({"p": p})
    assert np.abs(steps(theirs, p, loss, 2, 0.0) - expected).max() > 0.05 * np.abs(expected).max()


@pytest.mark.parametrize("hh", [None, [0.3, -0.2, 0.05]])
def test_twin_parameter_takes_the_steps_of_both_halves(hh):
    # torch: b_ih and b_hh, both receiving dL/d(b_ih + b_hh); unmix: their sum b
    start, target, c = np.array([0.4, -0.1, 0.2]), np.array([0.3, 0.1, -0.4]), np.array([1.0, 2.0, 3.0])
    half = start / 2 if hh is None else np.array(hh)
    grads = []  # the gradient of each half is the gradient at the sum, known only step by step
    b_ih, b_hh, m, v = start - half, half, [0.0, 0.0], [0.0, 0.0]
    for t in range(1, 5):
        g = 2 * c * (b_ih + b_hh - target)
        halves = []
        for k, h in enumerate((b_ih, b_hh)):
            gk = g + 1e-2 * h
            m[k] = m[k] + 0.1 * (gk - m[k])
            v[k] = 0.999 * v[k] + 0.001 * gk * gk
            halves.append(h - 0.05 / (1 - 0.9**t) * m[k] / (np.sqrt(v[k]) / np.sqrt(1 - 0.999**t) + 1e-8))
        b_ih, b_hh = halves
    p, loss = problem(start, target, c)
    solver = Adam(alpha=0.05)
    solver.set_parameters({"p": p}, twins={"p": None if hh is None else np.array(hh, np.float32)})
    np.testing.assert_allclose(steps(solver, p, loss, 4, 1e-2), b_ih + b_hh, atol=2e-6)


def test_states_save_in_nnabla_layout_and_load_back(tmp_path):
    import h5py

    p, loss = problem([1.0, 2.0], [0.0, 0.0], [1.0, 1.0])
    solver = Adam(alpha=0.1)
    solver.set_parameters({"p": p})
    steps(solver, p, loss, 3, 0.0)
    solver.save_states(str(tmp_path / "adam.h5"))
    nnabla_adam = S.Adam(alpha=0.1)  # the same moments under NNabla's own solver
    nnabla_adam.set_parameters({"p": p})
    nnabla_adam.load_states(str(tmp_path / "adam.h5"))
    state = nnabla_adam.get_states()["p"]
    assert state.t == 3
    np.testing.assert_array_equal(state.pstate["mean"].d, solver.states["p"].pstate["mean"].d)
    with h5py.File(tmp_path / "adam.h5") as f:
        assert sorted(f["p"]) == ["mean", "t", "var"]
