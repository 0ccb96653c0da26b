"""Pure emotion cores: taxonomy, the edge model's arithmetic, metrics, trajectories, cohorts.

Nothing here reads files, talks to a database or imports a web framework; callers pass data
in and get dataclasses or numpy arrays back.
"""
