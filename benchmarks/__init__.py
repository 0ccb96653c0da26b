"""NEXUS benchmarks: ``make bench`` (``python -m benchmarks [name ...]``).

Every ``benchmarks/bench_<name>.py`` module is one benchmark; :mod:`benchmarks.__main__` finds
them by that prefix, so a new benchmark needs no registration. Each returns a
:class:`benchmarks.report.Section` and the runner rewrites ``docs/benchmarks.md`` from the
sections of one run, because figures are only comparable with a baseline measured in the same
run on the same machine.
"""
