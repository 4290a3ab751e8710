"""Running export plans: what :mod:`lazyexport.run` (the export functions) is built from.

- :mod:`.results`: what an export reports (progress, result, conversions);
- :mod:`.progress`: counting an export's work (blocks, finishing work, commit) for progress;
- :mod:`.preflight`: the checks every export makes before it writes, and errors in the user's
  terms;
- :mod:`.executors`: inline, threads, processes and a dask cluster, each submitting block tasks
  in a bounded window;
- :mod:`.schedulers`: scheduler names, the executor of a plan, and cluster sizing;
- :mod:`.lazy`: ``compute=False``: an export job's block writes and commit as a dask graph;
- :mod:`.regions`: planning an export of several regions.

Nothing here imports :mod:`lazyexport.run`; it imports these.
"""
