"""Embedding-quality evaluation: tile labels, metrics, baselines and reports (pure core).

The modules are plain numpy / scikit-learn / torch and import nothing from Ray or storage:

- :mod:`antssl.evaluate.labels`: per-tile labels from label rasters aligned with scenes.
- :mod:`antssl.evaluate.retrieval`: cosine neighbours and other-scene precision@k.
- :mod:`antssl.evaluate.metrics`: clustering agreement (NMI, ARI, purity) and linear probes.
- :mod:`antssl.evaluate.baselines`: feature extractors on raw tiles to compare against.
- :mod:`antssl.evaluate.report`: Markdown tables and PNG figures.

The ``antssl evaluate`` stage wires them (these import storage, the reader and torch
checkpoints, still no Ray):

- :mod:`antssl.evaluate.tileset`: the scored scenes' tiles, planned, read and labelled.
- :mod:`antssl.evaluate.features`: the checkpoint's embeddings and the baselines' features.
- :mod:`antssl.evaluate.scoring`: every metric per method, as ``{metric: (value, counts)}``.
- the evaluate stage itself: :mod:`antssl.stages.evaluate` (writes ``<workspace>/eval/``).

The protocol these implement is described in EVAL-PROTOCOL.md (the MOA fracture protocol):
other-scene retrieval, counts beside every figure, baselines in the same run.
Importing this package imports none of its submodules.
"""

from __future__ import annotations

from antssl.errors import EvaluationError

__all__ = ["EvaluationError"]
