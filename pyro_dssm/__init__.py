"""pyro_dssm: a deep state-space model with discrete latent states, in Pyro.

Letters used in every shape: B batch, T time, K states, D observation dim,
H hidden size.

From Python: the estimator (:mod:`pyro_dssm.estimator`, scikit-learn's habits)::

    from pyro_dssm import DSSM
    model = DSSM(n_states=3, n_epochs=5, random_state=0).fit(X, lengths)   # X (N, D), or a list of (T_i, D)
    model.predict(X, lengths), model.predict_proba(X, lengths), model.score(X, lengths), model.transmat_

or the override strings of the command line (:mod:`pyro_dssm.api`)::

    import pyro_dssm
    model = pyro_dssm.fit(sequences, n_states=3, overrides=["trainer.n_epochs=5"])
    model.predict(x), model.predict_proba(x), model.score(x), model.bic(x), model.save("model.pt")
    model = pyro_dssm.load("runs/mine")

A family of your own (an emission or a transition): a subclass of
:class:`pyro_dssm.model.emissions.base.Emission` registered with ``pyro_dssm.register_emission``.
"""

__version__ = "0.1.0"
__all__ = ["DSSM", "fit", "load", "FittedDSSM", "register_emission", "register_transition"]


def __getattr__(name: str):
    # imported on first use: `import pyro_dssm` (and python -m pyro_dssm.gather) stays free of torch, pyro, hydra
    if name == "DSSM":  # the estimator; the nn.Module of that name is pyro_dssm.model.dssm.DSSM
        from pyro_dssm.estimator import DSSM

        return DSSM
    if name in ("fit", "load"):
        from pyro_dssm import api

        return getattr(api, name)
    if name in ("register_emission", "register_transition"):
        from pyro_dssm.config import families

        return getattr(families, name)
    if name == "FittedDSSM":
        from pyro_dssm.fitted import FittedDSSM

        return FittedDSSM
    raise AttributeError(f"module 'pyro_dssm' has no attribute {name!r}")
