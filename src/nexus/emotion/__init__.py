"""The emotion domain: what visitors feel in what they write, as an 11-dimension vector.

``service`` is the only module other domains import. Pure cores live in ``models/``;
``training/`` needs the optional ``train`` extra (torch) and is never imported at serve time.
"""
