"""Versioned data contracts (v1) of the quant platform.

These pydantic models are the validated boundary: data entering from a feed, a file or a user is
checked here once; hot paths work on typed records derived from them (see ``quant_core.bars``).
"""

from quant_core.contracts.enums import (
    ActionKind,
    Adjustment,
    AggressorSide,
    Interval,
    OptionRight,
    OrderSide,
    OrderStatus,
    OrderType,
    Session,
    TimeInForce,
    TradingMode,
)
from quant_core.contracts.market import (
    Bar,
    BookSnapshot,
    BookTicker,
    L2Update,
    OccSymbol,
    OptionsQuote,
    PriceLevel,
    Trade,
)
from quant_core.contracts.schema import MODELS, bundle_schema, model_schema, schema_files
from quant_core.contracts.signals import Action, AlphaSignal, Features, RiskVerdict
from quant_core.contracts.trading import Order, Position
from quant_core.contracts.types import SCHEMA_VERSION, SYMBOL_PATTERN, Contract

__all__ = [
    "MODELS",
    "SCHEMA_VERSION",
    "SYMBOL_PATTERN",
    "Action",
    "ActionKind",
    "Adjustment",
    "AggressorSide",
    "AlphaSignal",
    "Bar",
    "BookSnapshot",
    "BookTicker",
    "Contract",
    "Features",
    "Interval",
    "L2Update",
    "OccSymbol",
    "OptionRight",
    "OptionsQuote",
    "Order",
    "OrderSide",
    "OrderStatus",
    "OrderType",
    "Position",
    "PriceLevel",
    "RiskVerdict",
    "Session",
    "TimeInForce",
    "Trade",
    "TradingMode",
    "bundle_schema",
    "model_schema",
    "schema_files",
]
