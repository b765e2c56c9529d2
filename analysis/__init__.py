"""pxm.analysis — reconstruction engine, geometry, strain and metrics (docs/decisions/0001-rooms.md).

Knows nothing of Bluesky, Ophyd, Tiled or devices; :mod:`analysis.xp` is the only module that imports CuPy.
"""
