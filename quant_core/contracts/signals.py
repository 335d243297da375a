"""Research and decision contracts: features, alpha signals, actions and risk verdicts."""

from __future__ import annotations

import math
from typing import Annotated, Self

from pydantic import Field, StringConstraints, field_validator, model_validator

from quant_core.contracts.enums import ActionKind, OrderSide, TradingMode
from quant_core.contracts.types import (
    Contract,
    Identifier,
    NonNegDecimal,
    PosDecimal,
    Symbol,
    UtcDatetime,
)

FeatureName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]


class Features(Contract):
    """A named, versioned feature vector for one symbol at one instant."""

    feature_set: Identifier
    version: Annotated[int, Field(ge=1)] = 1
    symbol: Symbol
    ts_event: UtcDatetime
    values: dict[FeatureName, float] = Field(min_length=1)

    @field_validator("values")
    @classmethod
    def _finite(cls, values: dict[str, float]) -> dict[str, float]:
        for name, value in values.items():
            if not math.isfinite(value):
                raise ValueError(f"values[{name!r}]={value} is not a finite number")
        return values


class AlphaSignal(Contract):
    """A strategy's view: ``score`` in [-1, 1] (short..long) with ``confidence`` in [0, 1]."""

    signal_id: Identifier
    strategy_id: Identifier
    symbol: Symbol
    ts_event: UtcDatetime
    score: float = Field(ge=-1, le=1)
    confidence: float = Field(ge=0, le=1)
    horizon_s: Annotated[int, Field(gt=0)]
    features_ref: Identifier | None = None


class Action(Contract):
    """What a strategy wants to do, before risk has had its say."""

    action_id: Identifier
    strategy_id: Identifier
    signal_id: Identifier | None = None
    symbol: Symbol
    kind: ActionKind
    side: OrderSide | None = None
    qty: NonNegDecimal
    mode: TradingMode
    ts_event: UtcDatetime
    reason: Annotated[str, StringConstraints(max_length=500)] = ""

    @model_validator(mode="after")
    def _invariants(self) -> Self:
        trades = self.kind is not ActionKind.HOLD
        if trades and (self.side is None or self.qty == 0):
            raise ValueError(
                f"kind={self.kind.value} needs a side and qty > 0, got side={self.side}, "
                f"qty={self.qty}"
            )
        if not trades and (self.side is not None or self.qty != 0):
            raise ValueError(
                f"kind=hold takes no side and qty=0, got side={self.side}, qty={self.qty}"
            )
        return self


class RiskVerdict(Contract):
    """Risk's answer to one action: approve (maybe with a smaller size) or reject with reasons."""

    action_id: Identifier
    approved: bool
    adjusted_qty: PosDecimal | None = None
    reasons: tuple[Annotated[str, StringConstraints(min_length=1, max_length=500)], ...] = ()
    checked_rules: tuple[Identifier, ...] = ()
    ts_event: UtcDatetime

    @model_validator(mode="after")
    def _invariants(self) -> Self:
        if not self.approved and not self.reasons:
            raise ValueError("approved=False needs at least one entry in reasons")
        if not self.approved and self.adjusted_qty is not None:
            raise ValueError(
                f"adjusted_qty={self.adjusted_qty} makes no sense on a rejected action"
            )
        return self
