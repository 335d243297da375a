"""Order and position contracts shared by strategies, risk and execution."""

from __future__ import annotations

from decimal import Decimal
from typing import Self

from pydantic import model_validator

from quant_core.contracts.enums import (
    OrderSide,
    OrderStatus,
    OrderType,
    TimeInForce,
    TradingMode,
)
from quant_core.contracts.types import (
    Contract,
    Identifier,
    NonNegDecimal,
    PosDecimal,
    Price,
    Symbol,
    UtcDatetime,
)


class Order(Contract):
    order_id: Identifier
    client_order_id: Identifier | None = None
    symbol: Symbol
    side: OrderSide
    type: OrderType
    time_in_force: TimeInForce
    qty: PosDecimal
    limit_price: Price | None = None
    stop_price: Price | None = None
    status: OrderStatus = OrderStatus.NEW
    filled_qty: NonNegDecimal = Decimal(0)
    avg_fill_price: Price | None = None
    mode: TradingMode
    created_at: UtcDatetime
    updated_at: UtcDatetime | None = None

    @model_validator(mode="after")
    def _invariants(self) -> Self:
        needs_limit = self.type in (OrderType.LIMIT, OrderType.STOP_LIMIT)
        needs_stop = self.type in (OrderType.STOP, OrderType.STOP_LIMIT)
        if needs_limit != (self.limit_price is not None):
            raise ValueError(
                f"limit_price={self.limit_price} is {'required' if needs_limit else 'not allowed'}"
                f" for type={self.type.value}"
            )
        if needs_stop != (self.stop_price is not None):
            raise ValueError(
                f"stop_price={self.stop_price} is {'required' if needs_stop else 'not allowed'}"
                f" for type={self.type.value}"
            )
        if self.filled_qty > self.qty:
            raise ValueError(f"filled_qty={self.filled_qty} exceeds qty={self.qty}")
        if self.status is OrderStatus.FILLED and self.filled_qty != self.qty:
            raise ValueError(
                f"status=filled needs filled_qty == qty, got filled_qty={self.filled_qty}, "
                f"qty={self.qty}"
            )
        if self.filled_qty > 0 and self.avg_fill_price is None:
            raise ValueError(f"avg_fill_price is required once filled_qty={self.filled_qty} > 0")
        if self.updated_at is not None and self.updated_at < self.created_at:
            raise ValueError(
                f"updated_at={self.updated_at.isoformat()} is before "
                f"created_at={self.created_at.isoformat()}"
            )
        return self


class Position(Contract):
    """Holding in one symbol; ``qty`` is signed (negative = short)."""

    symbol: Symbol
    qty: Decimal
    avg_entry_price: Price | None = None
    market_price: Price | None = None
    realized_pnl: Decimal = Decimal(0)
    mode: TradingMode
    ts_event: UtcDatetime

    @model_validator(mode="after")
    def _invariants(self) -> Self:
        if self.qty != 0 and self.avg_entry_price is None:
            raise ValueError(f"avg_entry_price is required for a non-flat qty={self.qty}")
        return self

    @property
    def unrealized_pnl(self) -> Decimal | None:
        if self.market_price is None or self.avg_entry_price is None:
            return None
        return (self.market_price - self.avg_entry_price) * self.qty
