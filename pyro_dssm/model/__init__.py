r"""The maths: the generative model p(X, C), the guide q(C | X) and exact HMM inference.

- :mod:`~pyro_dssm.model.hmm`: forward, backward, marginals, Viterbi, log p(X) (pure functions);
- :mod:`~pyro_dssm.model.scan`: the same forward as an associative scan (O(log T) depth) and log p(X) of one
  very long sequence in chunks (bounded memory);
- :mod:`~pyro_dssm.model.known`: known states as a noise-free observation (the posterior clamped there);
- :mod:`~pyro_dssm.model.emissions`, :mod:`~pyro_dssm.model.transitions`: the families of the model's two
  factors, one class each (``base.py`` the contract); :mod:`~pyro_dssm.model.families` builds the ones a
  config names from the registry :mod:`pyro_dssm.config.families`;
- :mod:`~pyro_dssm.model.networks`: the guide's networks and the model evidence it reads;
- :mod:`~pyro_dssm.model.relaxed`: relaxed (Gumbel-Softmax) Markov chains as Pyro distributions;
- :mod:`~pyro_dssm.model.dssm`: the DSSM's Pyro ``model`` and ``guide``;
- :mod:`~pyro_dssm.model.exact`: the same generative model with the states summed out.

Layer: imports :mod:`pyro_dssm.config` only.
"""
