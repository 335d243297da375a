"""The ``quant`` command line: one module per command group, each a thin edge over the packages."""
