"""kimen: a local-first secrets tool.

The package root holds only the version, so importing it costs nothing on the hot path.
"""

__version__ = "0.1.0"
