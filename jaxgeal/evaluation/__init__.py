"""Evaluation of dense visual alignment: PCK-Transfer (`jaxgeal.evaluation.pck`, Peebles et al. 2022, Sec. 4.2).

Submodules are imported explicitly (`from jaxgeal.evaluation import pck`) so that `python -m
jaxgeal.evaluation.pck` runs without importing itself twice.
"""
