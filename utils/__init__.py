"""Shared helpers of the few-shot learning book.

One module per job, imported by the chapters:

- :mod:`utils.config`   budgets (``quick``/``full``), device, seeds, the cache folder, configs
- :mod:`utils.data`     Omniglot: finding, loading, caching, splits
- :mod:`utils.episodes` N-way K-shot episodes and the fixed test episodes
- :mod:`utils.evaluate` accuracy with a 95 % confidence interval
- :mod:`utils.train`    the training loop, and runs saved by name, budget, seed and config
- :mod:`utils.registry` the methods, as their chapters register them, and what they measured
- :mod:`utils.predict`  ``python -m utils.predict``: your own images, classified (chapter 13)
- :mod:`utils.methods`  generated from the chapters' ``#@save`` cells (``make methods``)

The idea that a chapter teaches is written in the chapter, not here.
"""
