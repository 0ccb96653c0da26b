"""The decision engine: feature flags, experiments, bandits, guarded rollouts and ``decide``.

Pure cores (no I/O): :mod:`.flags` (flag evaluation), :mod:`.stats` (experiment analysis),
:mod:`.bandits` (allocation policies), :mod:`.ope` (off-policy evaluation), :mod:`.rollouts`
(guarded rollout decisions) and :mod:`.simulation` (the visitor simulator's world). The
service, views and tables build on them.
"""
