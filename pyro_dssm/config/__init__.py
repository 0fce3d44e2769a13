"""Settings: the typed configuration of every Hydra group and the one style of range checks.

Lowest layer: imported by every other subpackage, imports none of them.
"""
