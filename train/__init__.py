"""Training, evaluation and export of ecgstream's beat-embedding network.

Needs the ``[train]`` extra (TensorFlow, matplotlib). ``python -m train``
runs everything; ``python -m train.evaluate`` re-runs the evaluation of the
shipped model in ``edge/`` and checks its card. See ``docs/model/report.md``.
"""
