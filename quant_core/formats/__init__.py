"""Readers of the wire and file formats the platform ingests, producing validated contracts.

This is the validating edge path (tests, imports, the odd REST answer). The live hot loop uses
the typed fast decoder of ``quant_core.decode`` instead and is checked against this one.
"""
