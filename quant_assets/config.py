"""Settings of the code location read from the environment at load time (never secrets)."""

from __future__ import annotations

from pathlib import Path

from quant_core.universe import UniverseError, parse_symbols
from quant_resources import settings

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("alpaca", "synthetic")


def equity_symbols() -> list[str]:
    """QUANT_EQUITY_SYMBOLS, else QUANT_UNIVERSE_FILE, else configs/universe.txt."""
    if text := settings.equity_symbols_text():
        return parse_symbols(text)
    path = Path(settings.universe_file() or ROOT / "configs" / "universe.txt")
    if not path.is_file():
        raise UniverseError(f"universe file {path} does not exist")
    return parse_symbols(path.read_text(), origin=str(path))


def option_underlyings() -> list[str]:
    text = settings.option_underlyings_text()
    return parse_symbols(text, origin="QUANT_OPTION_UNDERLYINGS")


def equity_source() -> tuple[str, str]:
    """(provider, why). An explicit QUANT_EQUITY_SOURCE wins; unset means Alpaca when both
    keys are present and the synthetic market otherwise. The reason is shown in metadata."""
    explicit = settings.equity_source_text()
    if explicit:
        if explicit not in SOURCES:
            raise ValueError(f"QUANT_EQUITY_SOURCE={explicit!r} is not one of {', '.join(SOURCES)}")
        return explicit, "QUANT_EQUITY_SOURCE"
    keys = list(settings.alpaca_keys())
    if all(keys):
        return "alpaca", "QUANT_EQUITY_SOURCE unset, Alpaca keys present"
    if any(keys):
        # Half a key pair is a broken Alpaca setup, not a request for synthetic data.
        missing = "ALPACA_SECRET_KEY" if keys[0] else "ALPACA_API_KEY"
        raise ValueError(f"{missing} is not set (the other Alpaca key is); set both or neither")
    return "synthetic", "QUANT_EQUITY_SOURCE unset and no Alpaca keys (embedded default)"
