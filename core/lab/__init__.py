"""The lab: accuracy evaluation, threshold calibration and fine-tuning (not the runtime).

The ``eval``, ``calibrate`` and ``finetune`` commands and the benchmarks use these modules;
serving a cache never imports them.
"""
