"""The toolkit's version, in a module that imports nothing (layer 0: anyone may import it)."""

__version__ = "0.1.0"
