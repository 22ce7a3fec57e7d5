"""Lookup latency, insert throughput and memory of ModelCache with the real MiniLM model.

The benchmark is :mod:`modelcache.lab.latency` (also ``modelcache bench``, which works from an
installed package); this script runs it from a source checkout, reading the shared data folder
(``$MODELCACHE_DATA`` or ../shared/data) unless ``--data`` says otherwise.

Usage: ``python benchmarks/latency.py [--sizes 1000,10000,100000] [--queries 300]
[--out benchmarks/results/latency.md]``
"""

from __future__ import annotations

from _common import DATA

from modelcache.lab.latency import main

if __name__ == "__main__":
    raise SystemExit(main(data=DATA, prog="python benchmarks/latency.py"))
