"""Evaluation of dense visual alignment: PCK-Transfer (`jaxgeal.evaluation.pck`, Peebles et al. 2022, Sec. 4.2);
of swaps against exact synthetic ground truth (`swapping`, with the key point detector of `keypoint_detector`).

Submodules are imported explicitly (`from jaxgeal.evaluation import pck`) so that `python -m
jaxgeal.evaluation.pck` runs without importing itself twice.
"""
