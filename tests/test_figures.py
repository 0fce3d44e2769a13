"""Figures reach TensorBoard: confusion matrix, transition matrices and a segmentation strip, as images."""

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pyro_dssm.io.figures import class_colours, matched_order, relabel
from pyro_dssm.train import train

from .helpers import TINY, compose_config

TAGS = {"figures/confusion", "figures/transition", "figures/segmentation"}


def test_figures_appear_in_tensorboard_events(tmp_path):
    cfg = compose_config([*TINY, "trainer.n_epochs=3", "trainer.figure_every=2", "trainer.init=none",
                          "trainer.guide_warmup_steps=5"])
    train(cfg, tmp_path)
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0})
    acc.Reload()
    assert TAGS <= set(acc.Tags()["images"])
    for tag in TAGS:
        images = acc.Images(tag)
        assert [im.step for im in images] == [2, 3]  # every 2 epochs, and the last
        assert images[-1].width > 100 and images[-1].height > 100
        assert images[-1].encoded_image_string[:4] == b"\x89PNG"


def test_states_are_ordered_and_coloured_by_their_matched_class():
    # class 0 <- state 2, class 1 <- state 0, state 1 unmatched (3 states, 2 classes)
    cm = np.array([[1, 0, 9], [8, 2, 0]])
    assert matched_order(cm).tolist() == [2, 0, 1]
    colours = class_colours(cm)
    assert colours.tolist() == [1, 2, 0]
    assert relabel(np.array([2, 0, 1, -1]), colours).tolist() == [0, 1, 2, -1]
    # 2 states, 4 classes of which only 2 and 3 occur: each state takes its class's colour
    cm = np.array([[0, 0], [0, 0], [5, 1], [0, 7]])
    assert class_colours(cm).tolist() == [2, 3]
