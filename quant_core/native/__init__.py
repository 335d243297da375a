"""Compiled hot loops of quant_core (C, CPython API only; built by setup.py at install).

Each module here has a pure-Python reference in quant_core that tests hold it to; the compiled
one is what the product runs.
"""
