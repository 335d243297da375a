"""Binance market-data edges: the combined-stream websocket client and the REST client.

Exchange specifics live here and only here (cryptofeed's rule): stream names are lower-case,
REST symbols upper-case, bases come from BINANCE_WS_URL / BINANCE_REST_URL without paths.
"""
