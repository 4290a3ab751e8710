"""Running export plans: what :mod:`lazyexport.run` (the export functions) is built from.

- :mod:`.results`: what an export reports (progress, result, conversions);
- :mod:`.preflight`: the checks every export makes before it writes, and errors in the user's
  terms;
- :mod:`.schedulers`: schedulers, executors and cluster sizing;
- :mod:`.lazy`: ``compute=False``: an export job's block writes and commit as a dask graph;
- :mod:`.regions`: planning an export of several regions.

Nothing here imports :mod:`lazyexport.run`; it imports these.
"""
