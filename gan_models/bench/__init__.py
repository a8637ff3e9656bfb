"""Benchmarks that report ratios against a reference in the same run (this machine is shared
and noisy): ``train.py`` (the trainer against a bare loop), ``eval.py`` (evaluation throughput),
``data.py`` (training memory and speed on streamed data), ``eval_data.py`` (the features stage
and reference statistics on streamed data); ``cli.py`` mounts them as ``ganops bench ...``.
"""
