"""Emission families (pyro_dssm/model/emissions/): exact HMM tables against brute force and torch.distributions,
relaxed log_prob against the table, ragged masking, sampling, data checks, init, and a CLI run per family."""

import itertools
import json

import numpy as np
import pytest
import torch
from pyro import poutine
from torch.distributions import MultivariateNormal, Normal, Poisson
from torch.nn.functional import softplus

from pyro_dssm.config import ModelConfig
from pyro_dssm.data.synthetic import make_synthetic
from pyro_dssm.config.families import EMISSIONS
from pyro_dssm.inference.em import fit_classical
from pyro_dssm.model import hmm
from pyro_dssm.model.dssm import DSSM
from pyro_dssm.model.emissions.statistics import RATE_FLOOR, SCALE_FLOOR
from pyro_dssm.model.exact import ExactBaseline

from .helpers import data_driven_init, hand_messages

FAMILIES = sorted(EMISSIONS)
AR_FAMILIES = ("autoregressive", "autoregressive_full")  # the families with memory (order p)
K, D = 2, 2


def make_model(family, order=1, cls=DSSM, seed=0):
    """A small model with random weights; the AR families' zero-initialised MLP correction (and the full one's
    off-diagonal noise) made non-zero."""
    torch.manual_seed(seed)
    net = cls(ModelConfig(n_states=K, obs_dim=D, transition_hidden=5, emitter_hidden=6, rnn_hidden=4,
                          noise_std=0.7, emission=family, ar_order=order))
    if family in AR_FAMILIES:
        with torch.no_grad():
            for p in (net.emitter.weight, net.emitter.net[2].weight, net.emitter.net[2].bias):
                p.normal_(0, 0.3)
            if family == "autoregressive_full":
                net.emitter.raw_tril.normal_(0, 0.5)
    return net


def make_x(family, B, T, seed=1):
    gen = torch.Generator().manual_seed(seed)
    if family == "poisson":
        return torch.poisson(torch.full((B, T, D), 2.0), generator=gen)
    return torch.randn(B, T, D, generator=gen)


def step_density(net, family, x_seq, t, k):
    """log p(x_t | c_t = k, x_{<t}) of one sequence x_seq (T, D), written out from the parameters."""
    em = net.emitter
    e_k = torch.eye(K)[k]
    if family == "gaussian":
        return Normal(em.net(e_k), 0.7).log_prob(x_seq[t]).sum()
    if family == "gaussian_scale":
        mean, raw = em.net(e_k).split(D)
        return Normal(mean, softplus(raw) + SCALE_FLOOR).log_prob(x_seq[t]).sum()
    if family == "poisson":
        return Poisson(softplus(em.net(e_k)) + RATE_FLOOR).log_prob(x_seq[t]).sum()
    if family == "gaussian_full":  # the Cholesky factor by hand, the density from the covariance L L^T
        out = em.net(e_k)
        L = torch.tensor([[softplus(out[D]) + SCALE_FLOOR, 0.0], [out[D + 1], softplus(out[D + 2]) + SCALE_FLOOR]])
        return MultivariateNormal(out[:D], covariance_matrix=L @ L.T).log_prob(x_seq[t])
    p = em.order
    if t < p:  # the first p steps: the state's own initial Gaussian
        return Normal(em.init_mean[k], softplus(em.init_raw_scale[k]) + SCALE_FLOOR).log_prob(x_seq[t]).sum()
    h = torch.cat([x_seq[t - lag] for lag in range(1, p + 1)])  # [x_{t-1}, ..., x_{t-p}]
    corr = em.net(torch.cat([e_k, h]))
    mean = em.weight[k] @ h + em.bias[k] + corr[:D]
    if family == "autoregressive_full":  # the mean's correction only; noise L_k L_k^T, L_k by hand (D = 2)
        diag = softplus(em.raw_scale[k]) + SCALE_FLOOR
        L = torch.tensor([[diag[0], 0.0], [em.raw_tril[k, 0], diag[1]]])
        return MultivariateNormal(mean, covariance_matrix=L @ L.T).log_prob(x_seq[t])
    scale = softplus(em.raw_scale[k] + corr[D:]) + SCALE_FLOOR
    return Normal(mean, scale).log_prob(x_seq[t]).sum()


def brute_force_log_px(net, family, x_seq):
    """log sum over all K^T paths of p(c_{1:T}) prod_t p(x_t | c_t, x_{<t})."""
    eye = torch.eye(K)
    log_trans = net.transition(eye).log_softmax(-1)
    T = x_seq.shape[0]
    dens = torch.tensor([[float(step_density(net, family, x_seq, t, k)) for k in range(K)] for t in range(T)])
    joints = []
    for path in itertools.product(range(K), repeat=T):
        lp = -np.log(K) + sum(float(log_trans[path[t - 1], path[t]]) for t in range(1, T))
        joints.append(lp + sum(float(dens[t, path[t]]) for t in range(T)))
    return torch.tensor(joints, dtype=torch.float64).logsumexp(0)


@pytest.mark.parametrize("family,order", [(f, 1) for f in FAMILIES] + [(f, 2) for f in AR_FAMILIES])
@torch.no_grad()
def test_exact_log_px_equals_brute_force_enumeration(family, order):
    net = make_model(family, order)
    x = make_x(family, 2, 5)
    ours = hmm.log_likelihood(*net.exact_hmm(x))
    for b in range(2):
        assert float(ours[b]) == pytest.approx(float(brute_force_log_px(net, family, x[b])), abs=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_log_prob_at_one_hot_states_is_the_table(family):
    net = make_model(family)
    x = make_x(family, 3, 6)
    table = net.emitter.table(x)  # (B, T, K)
    assert table.shape == (3, 6, K)
    states = torch.randint(K, (3, 6), generator=torch.Generator().manual_seed(0))
    one_hot = torch.nn.functional.one_hot(states, K).float()
    expected = table.gather(-1, states[..., None]).squeeze(-1)
    assert torch.allclose(net.emitter.log_prob(x, one_hot), expected, atol=1e-5)
    # a relaxed state is a different point: not read off the table (the network sees the mixture)
    relaxed = torch.full((3, 6, K), 1.0 / K)
    assert torch.isfinite(net.emitter.log_prob(x, relaxed)).all()


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_padding_changes_nothing(family):
    """A ragged batch: exact log p(X) and the DSSM's emission factor equal those of the unpadded sequences,
    whatever the padded values."""
    net = make_model(family)
    x = make_x(family, 2, 7)
    lengths = torch.tensor([7, 4])
    mask = torch.arange(7) < lengths[:, None]
    garbage = x.clone()
    garbage[1, 4:] = 50.0  # a padded value that would dominate any sum it entered
    padded = hmm.log_likelihood(*net.exact_hmm(garbage), mask)
    alone = hmm.log_likelihood(*net.exact_hmm(x[1:, :4]))
    assert float(padded[1]) == pytest.approx(float(alone[0]), abs=1e-4)
    # the DSSM's relaxed emission site ("x"): padded steps contribute nothing
    y = poutine.trace(net.guide).get_trace(x, mask, 0.5).nodes["c"]["value"]
    factors = []
    for data in (x, garbage):
        tr = poutine.trace(poutine.condition(net.model, {"c": y})).get_trace(data, mask, 0.5)
        tr.compute_log_prob()
        factors.append(tr.nodes["x"]["log_prob"])
    assert torch.equal(factors[0], factors[1])


@pytest.mark.parametrize("family", FAMILIES)
@torch.no_grad()
def test_sample_shapes_and_statistics(family):
    net = make_model(family)
    if family in AR_FAMILIES:
        with torch.no_grad():  # a linear AR(1): x_t = a x_{t-1} + b + s eps per state, MLP correction off
            net.emitter.net[2].weight.zero_()
            net.emitter.net[2].bias.zero_()
            net.emitter.weight.copy_(torch.stack([0.8 * torch.eye(D), -0.5 * torch.eye(D)]))
    N, T = 400, 60
    states = torch.randint(K, (N, T), generator=torch.Generator().manual_seed(0))
    states[:, T // 2:] = 1  # long stretches of state 1 for the AR statistics
    x = net.emitter.sample(states, torch.Generator().manual_seed(1))
    assert x.shape == (N, T, D) and torch.isfinite(x).all()
    eye = torch.eye(K)
    sel = states == 1
    if family == "gaussian":
        assert torch.allclose(x[sel].mean(0), net.emitter.net(eye[1]), atol=0.03)
        assert torch.allclose(x[sel].std(0), torch.tensor(0.7), atol=0.02)
    elif family == "gaussian_scale":
        mean, raw = net.emitter.net(eye[1]).split(D)
        assert torch.allclose(x[sel].mean(0), mean, atol=0.03)
        assert torch.allclose(x[sel].std(0), softplus(raw) + SCALE_FLOOR, rtol=0.03)
    elif family == "poisson":
        assert torch.equal(x, x.round()) and (x >= 0).all()
        assert torch.allclose(x[sel].mean(0), softplus(net.emitter.net(eye[1])) + RATE_FLOOR, rtol=0.05)
    elif family == "gaussian_full":  # the sample covariance is L L^T, correlations included
        mean, scale_tril = net.emitter(eye[1])
        assert torch.allclose(x[sel].mean(0), mean, atol=0.03)
        assert torch.allclose(torch.cov(x[sel].T), scale_tril @ scale_tril.T, atol=0.03)
    else:  # least squares of x_t on [x_{t-1}, 1] within state 1 recovers A_1 = -0.5 I and b_1
        prev, cur = x[:, T // 2: -1].reshape(-1, D), x[:, T // 2 + 1:].reshape(-1, D)
        design = torch.cat([prev, torch.ones(len(prev), 1)], 1).double()
        coef = torch.linalg.lstsq(design, cur.double()).solution.T.float()  # (D, D + 1)
        assert torch.allclose(coef[:, :D], -0.5 * torch.eye(D), atol=0.03)
        assert torch.allclose(coef[:, D], net.emitter.bias[1], atol=0.03)
        if family == "autoregressive_full":  # the innovations' covariance is L_1 L_1^T, correlations included
            resid = cur.double() - design @ coef.double().T
            L = net.emitter.cholesky(net.emitter.raw_scale, net.emitter.raw_tril)[1].double()
            assert torch.allclose(torch.cov(resid.T), L @ L.T, atol=0.03)


def test_poisson_check_data_names_the_bad_value():
    net = make_model("poisson")
    x = torch.poisson(torch.full((3, 5, D), 2.0))
    mask = torch.ones(3, 5, dtype=torch.bool)
    net.emitter.check_data(x, mask)
    bad = x.clone()
    bad[2, 3, 1] = 1.5
    with pytest.raises(ValueError, match=r"sequence 2, step 3, channel 1 holds 1.5 \(not an integer\)"):
        net.emitter.check_data(bad, mask)
    bad[1, 0, 0] = -2.0
    with pytest.raises(ValueError, match=r"sequence 1, step 0, channel 0 holds -2.0 \(negative\)"):
        net.emitter.check_data(bad, mask)
    mask[1:, :] = False  # padding is never read
    net.emitter.check_data(bad, mask)
    for family in ("gaussian", "autoregressive"):
        make_model(family).emitter.check_data(bad, mask)  # real-valued families take any finite value
        with pytest.raises(ValueError, match="infinite"):
            make_model(family).emitter.check_data(torch.full((1, 2, D), float("inf")))
        make_model(family).emitter.check_data(torch.full((1, 2, D), float("nan")))  # NaN: a missing value
    counts = x.clone()
    counts[0, 1, 1] = float("nan")
    net.emitter.check_data(counts)  # a missing count is neither negative nor a fraction


def test_model_settings_are_checked():
    with pytest.raises(ValueError, match="model.emission must be one of"):
        ModelConfig(emission="student_t")
    with pytest.raises(ValueError, match=r"model.ar_order must be an integer >= 0 \(0: no past.*got -1"):
        ModelConfig(emission="autoregressive", ar_order=-1)


def test_gaussian_keeps_the_checkpoint_keys_of_before():
    keys = [k for k in make_model("gaussian").state_dict() if k.startswith("emitter.")]
    assert keys == ["emitter.net.0.weight", "emitter.net.0.bias", "emitter.net.2.weight", "emitter.net.2.bias"]


@pytest.mark.parametrize("family", [*AR_FAMILIES, "poisson"])
def test_enumerated_model_equals_forward_algorithm(family):
    net = make_model(family, cls=ExactBaseline)
    x = make_x(family, 3, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    enum = net.enum_elbo().differentiable_loss(net.enum_model, net.guide, x, mask)
    fast = net.elbo().differentiable_loss(net.model, net.guide, x, mask)
    assert float(enum.detach()) == pytest.approx(float(fast.detach()), rel=1e-5)


@pytest.mark.parametrize("family", AR_FAMILIES)
def test_autoregressive_init_puts_the_linear_ar_hmm_into_the_network_exactly(family):
    """After the init, the network's table is the fitted linear AR-HMM's (the distillation is exact)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.cumsum(torch.randn(6, 40, D, generator=gen), 1) * 0.3
    mask = torch.ones(6, 40, dtype=torch.bool)
    net = make_model(family)
    params, trans, _, _ = fit_classical(net.emitter, x, mask, torch.Generator().manual_seed(0), "em", 1, 5, 0.8)
    data_driven_init(net, x, mask, torch.Generator().manual_seed(0), "em", restarts=1, em_iters=5)
    assert torch.allclose(net.emitter.table(x), net.emitter.classical_table(params, x), atol=1e-4)
    assert torch.allclose(net.transition_parameters()[1].exp(), trans, atol=0.02)


@pytest.mark.parametrize("family", ["gaussian_scale", "poisson"])
def test_init_of_the_other_families_recovers_the_states(family):
    """EM of the classical HMM, distilled: the network's exact HMM decodes well-separated states."""
    torch.manual_seed(0)
    data = make_synthetic(n_states=K, obs_dim=D, seq_len=40, n_train=30, n_val=5, noise_std=0.3, seed=3)
    x, mask = data.train.x, data.train.mask
    if family == "poisson":
        x = torch.poisson(10 * softplus(3 * x) + 0.5, generator=torch.Generator().manual_seed(0))
    net = make_model(family)
    data_driven_init(net, x, mask, torch.Generator().manual_seed(0), "em", restarts=2, em_iters=10)
    path = hmm.viterbi(*net.exact_hmm(x), mask)[0]
    truth = data.train.states
    accuracy = max(float((path == truth).float().mean()), float((path == 1 - truth).float().mean()))
    assert accuracy > 0.9


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_trains_writes_metrics_and_decodes(family, cli, tmp_path):
    data = {"autoregressive": "switching_ar", "autoregressive_full": "switching_ar", "poisson": "counts"}.get(
        family, "synthetic")
    run_dir = tmp_path / "run"
    args = [f"data={data}", f"model.emission={family}", "data.n_states=2", "data.obs_dim=2", "data.seq_len=20",
            "data.n_train=16", "data.n_val=8", "trainer.n_epochs=1", "trainer.batch_size=8", "trainer.init_restarts=1",
            "trainer.init_em_iters=3", "trainer.guide_warmup_steps=2", "trainer.figure_every=0",
            f"hydra.run.dir={run_dir}"]
    proc = cli.run("pyro_dssm.train", args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["viterbi_accuracy"] <= 1 and np.isfinite(metrics["val_loglik_per_step"])
    x = np.abs(np.round(np.random.default_rng(0).normal(size=(2, 12, 2)) * 3))  # counts, valid for every family
    np.savez(tmp_path / "in.npz", x_a=x[0], x_b=x[1, :7])
    proc = cli.run("pyro_dssm.decode", [f"checkpoint={run_dir}", f"input={tmp_path / 'in.npz'}",
                                        f"output={tmp_path / 'out.csv'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert len(rows) == 1 + 12 + 7 and "viterbi_state" in rows[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_guide_reads_the_emission_table_exactly_for_families_with_memory(family):
    """The autoregressive guide's BiGRU reads [x_t, normalised log p(x_t | c_t = k, x_{<t})]; memoryless families
    read x_t alone (gaussian: the guide of before, same parameter shapes)."""
    net = make_model(family)
    extra = K if family in AR_FAMILIES else 0
    assert net.posterior.extra_dim == extra
    assert net.posterior.birnn.weight_ih_l0.shape == (3 * net.posterior.hidden_dim, D + extra)
    x = make_x(family, 3, 6)
    if extra:
        table = net.emitter.table(x).log_softmax(-1).clamp_min(-10.0)
        expected = net.posterior.birnn(torch.cat([x, table], -1))[0]
    else:
        expected = net.posterior.birnn(x)[0]
    assert torch.equal(net.guide_features(x), expected)
    with pytest.raises(ValueError, match="extra inputs per step"):
        net.posterior.encode(x, None, None if extra else torch.zeros(3, 6, K))


def test_guide_table_input_is_detached_from_the_emission():
    """The table is an input of the guide, as x is: the guide's loss sends no gradient into the emission."""
    net = make_model("autoregressive")
    net.guide_logits(make_x("autoregressive", 3, 6)).logsumexp(-1).sum().backward()
    assert all(p.grad is None for p in net.emitter.parameters())
    assert net.posterior.birnn.weight_ih_l0.grad[:, D:].abs().sum() > 0  # the table columns are read


@torch.no_grad()
def test_autoregressive_guide_ignores_padding():
    """Greedy guide decoding of a ragged batch with garbage padding equals that of each sequence alone."""
    net = make_model("autoregressive")
    x = make_x("autoregressive", 2, 7)
    mask = torch.arange(7) < torch.tensor([7, 4])[:, None]
    x[1, 4:] = 50.0
    padded = net.guide_logits(x, mask)
    assert torch.allclose(padded[1, :4], net.guide_logits(x[1:, :4])[0], atol=1e-6)
    assert torch.allclose(padded[0], net.guide_logits(x[:1])[0], atol=1e-6)


def test_autoregressive_warm_start_reaches_the_exact_posterior():
    """States that differ in dynamics only: after the warm start the guide's greedy path agrees with the exact
    marginals' argmax (measured 0.994 with the table input, 0.90 from x alone)."""
    from pyro_dssm.data.switching_ar import make_switching_ar
    from pyro_dssm.inference.warm_start import warm_start_guide
    torch.manual_seed(0)
    data = make_switching_ar(2, 2, 60, 64, 1, 0.95, 0.3, 0.95, 0.5, 1.0, seed=0)
    x, mask = data.train.x, data.train.mask
    net = DSSM(ModelConfig(n_states=2, obs_dim=2, rnn_hidden=16, emission="autoregressive"))
    data_driven_init(net, x, mask, torch.Generator().manual_seed(0), "em", restarts=1, em_iters=10)
    warm_start_guide(net, x, mask, torch.Generator().manual_seed(0), steps=60, batch_size=32)
    with torch.no_grad():
        exact = hmm.posterior_marginals(*net.exact_hmm(x), mask).argmax(-1)
        agree = float((net.guide_logits(x, mask).argmax(-1) == exact).float().mean())
    assert agree > 0.95, agree


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("setting", [None, True, False])
def test_guide_evidence_by_family_unless_set(family, setting):
    """model.guide_evidence: null = the model's evidence in the guide's logits for memoryless families only
    (measured: it lowered the autoregressive guide on data=switching_ar); true / false force it. With it, the
    logits are the networks' output plus the normalised emission table, the backward messages (checked by
    hand, :func:`~tests.helpers.hand_messages`) and log A from the previous state."""
    from dataclasses import replace

    net = make_model(family)
    net = type(net)(replace(net.config, guide_evidence=setting))
    expected_on = (family not in AR_FAMILIES) if setting is None else setting
    assert net.uses_evidence == expected_on
    x = make_x(family, 3, 6)
    features, evidence = net.guide_inputs(x)
    assert (evidence is not None) == expected_on
    if expected_on:
        assert torch.allclose(evidence.local, net.emitter.table(x).log_softmax(-1).detach())
        future = hand_messages(evidence.local, net.transition_parameters()[1].detach())
        assert torch.allclose(evidence.future, future, atol=1e-5)
        bare = net.posterior.unroll(features, lambda t, logits: torch.eye(K)[logits.argmax(-1)])[0]
        assert torch.allclose(net.guide_logits(x)[:, 0], bare[:, 0] + evidence.local[:, 0] + future[:, 0], atol=1e-5)


@pytest.mark.parametrize("family, skipped", [("gaussian", True), ("autoregressive", False)])
def test_the_warm_up_runs_only_where_the_guide_does_not_start_at_its_target(family, skipped, caplog):
    """With the messages (memoryless families by default) the guide's conditionals start at the exact posterior
    chain, the warm-up's target, whose cross-entropy gradient is zero: the warm-up is skipped, and said so."""
    import logging

    from pyro_dssm.api import fit

    net = make_model(family)  # the claim: the guide's whole logits at the start are the exact conditionals
    if skipped:
        x, mask = make_x(family, 2, 5), torch.ones(2, 5, dtype=torch.bool)
        with torch.no_grad():
            exact = hmm.posterior_chain(*net.exact_hmm(x), mask)
            path = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]])
            given = torch.nn.functional.one_hot(path, K).float().unbind(1)
            features, evidence = net.guide_inputs(x, mask.sum(-1))
            logits = net.posterior.unroll(features, lambda t, _: given[t], evidence=evidence)[0]
            for t in range(1, 5):
                rows = exact[torch.arange(2), t, path[:, t - 1]]
                assert torch.allclose(logits[:, t].log_softmax(-1), rows, atol=1e-5)
    xs = [np.random.default_rng(0).normal(size=(30, 2)) for _ in range(4)]
    with caplog.at_level(logging.INFO, logger="pyro_dssm.inference.trainer"):
        fit(xs, n_states=2, overrides=[f"model.emission={family}", "trainer.n_epochs=1", "trainer.init_restarts=1",
                                       "trainer.guide_warmup_steps=3", "trainer.figure_every=0"])
    assert ("guide warm-up skipped" in caplog.text) == skipped
    assert ("guide warm-up: cross-entropy" in caplog.text) != skipped


@pytest.mark.parametrize("messages", [True, False])
def test_guide_messages_make_the_models_part_of_the_guide_exact(messages):
    """model.guide_messages: with the backward messages, the model's part of the guide's logits (zero residual)
    is the exact posterior conditional p(c_t | c_{t-1}, X) of :func:`pyro_dssm.model.hmm.posterior_chain`;
    without them it is not (the networks must learn beta_t)."""
    from dataclasses import replace

    net = make_model("gaussian")
    net = type(net)(replace(net.config, guide_messages=messages))
    x = make_x("gaussian", 3, 6)
    lengths = torch.tensor([6, 4, 1])
    mask = torch.arange(6) < lengths[:, None]
    evidence = net.guide_inputs(x, lengths)[1]
    assert (evidence.future is not None) == messages
    with torch.no_grad():
        exact = hmm.posterior_chain(*net.exact_hmm(x), mask)  # (B, T, K_prev, K)
    gaps = []
    for t in range(6):
        valid = mask[:, t]
        for i in range(K):
            own = evidence.logits(t, torch.eye(K)[i].expand(3, K)).log_softmax(-1)
            gaps.append(float((own[valid] - exact[valid, t, i]).abs().max()))
    # without messages only the steps whose future is empty agree (e.g. every sequence's last)
    assert (max(gaps) < 1e-5) == messages, max(gaps)


@pytest.mark.parametrize("family", FAMILIES)
def test_hard_log_prob_has_log_prob_value_and_gradient(family):
    """The relaxed objectives' drawn-state term: a family may read it off its table (gaussian_full), never
    changing the value or the emission's gradient."""
    net = make_model(family)
    x = make_x(family, 3, 6)
    one_hot = torch.nn.functional.one_hot(torch.randint(K, (3, 6), generator=torch.Generator().manual_seed(2)), K)
    params = list(net.emitter.parameters())
    ours = net.emitter.hard_log_prob(x, one_hot.float())
    plain = net.emitter.log_prob(x, one_hot.float())
    assert torch.allclose(ours, plain, atol=1e-5)
    for a, b in zip(torch.autograd.grad(ours.sum(), params), torch.autograd.grad(plain.sum(), params)):
        assert torch.allclose(a, b, atol=1e-4)


def test_full_covariance_table_against_torch_multivariate_normal():
    from pyro_dssm.model.emissions.gaussian_full import state_table
    gen = torch.Generator().manual_seed(3)
    mean = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    L = torch.randn(4, 6, 6, generator=gen, dtype=torch.float64).tril(-1) + torch.diag_embed(
        torch.rand(4, 6, generator=gen, dtype=torch.float64) + 0.3)
    x = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64)
    expected = MultivariateNormal(mean, covariance_matrix=L @ L.transpose(-1, -2)).log_prob(x[:, :, None])
    assert torch.allclose(state_table(mean, L, x), expected, atol=1e-9)


def test_autoregressive_full_m_step_is_least_squares_with_the_residual_covariance():
    """With all weight on one state the M-step is ordinary least squares of x_t on [x_{t-1}, 1] and the
    residuals' covariance (hand formulas; the ridge and the prior's pseudo-points move them by < 1e-3), and its
    fast classical table equals the one derived from torch's MultivariateNormal."""
    from pyro_dssm.model.emissions.base import Emission

    emitter = make_model("autoregressive_full").emitter
    gen = torch.Generator().manual_seed(5)
    noise = torch.randn(4, 300, D, generator=gen) @ torch.tensor([[1.0, 0.0], [0.8, 0.5]]).T
    x = torch.zeros(4, 300, D)
    for t in range(1, 300):
        x[:, t] = 0.7 * x[:, t - 1] + 0.2 + noise[:, t]
    weights = torch.zeros(4, 300, K)
    weights[..., 0] = 1.0
    params = emitter.m_step(x, torch.ones(4, 300, dtype=torch.bool), weights)
    design = torch.cat([x[:, :-1], torch.ones(4, 299, 1)], -1).reshape(-1, D + 1).double()
    target = x[:, 1:].reshape(-1, D).double()
    coef = torch.linalg.lstsq(design, target).solution.T  # (D, D + 1)
    resid = target - design @ coef.T
    assert torch.allclose(params["coef"][0].double(), coef, atol=1e-3)
    L = params["scale_tril"][0].double()
    assert torch.allclose(L @ L.T, resid.T @ resid / len(resid), atol=1e-3)
    assert L[1, 0] > 0.3  # the innovations' correlation is kept (a diagonal family has 0 there)
    fast = emitter.complete_classical_table(params, x[:, :20])
    assert torch.allclose(fast, Emission.complete_classical_table(emitter, params, x[:, :20]), atol=1e-4)
