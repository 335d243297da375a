"""The data service: bars, latest values, option chains and session logs over HTTP (FastAPI).

``quant serve api`` runs it; :func:`quant_api.app.create_app` builds it for tests and embedding.
"""
