"""Field types shared by every v1 contract.

Timestamps are UTC-aware (naive input is rejected, other zones are converted), prices and
sizes are ``Decimal`` (exact at the boundary, serialised as JSON strings) and symbols follow one
pattern so that nothing that could break a query or a file path ever becomes a symbol.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = "v1"

# Letters, digits and the separators real venues use (BRK.B, BTC-USD, BTC/USDT, ES_F);
# never spaces, quotes, semicolons or anything else a query or a path could choke on.
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/\-]{0,31}$"
SOURCE_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$"


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]
Symbol = Annotated[
    str,
    Field(pattern=SYMBOL_PATTERN, description="Instrument symbol, stored upper-case."),
    AfterValidator(str.upper),
]
Source = Annotated[
    str,
    Field(pattern=SOURCE_PATTERN, description="Data provider: alpaca, binance, synthetic..."),
]
Identifier = Annotated[str, Field(pattern=ID_PATTERN)]
Price = Annotated[Decimal, Field(gt=0, description="Strictly positive price.")]
NonNegDecimal = Annotated[Decimal, Field(ge=0)]
PosDecimal = Annotated[Decimal, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]


class Contract(BaseModel):
    """Base of every v1 contract: immutable, strict about unknown fields, no NaN or infinity."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        allow_inf_nan=False,
        validate_default=True,
        ser_json_timedelta="iso8601",
    )
