"""What a client may ask of the endpoint: no statement may reach the host.

chDB is clickhouse-local: its default user holds every grant, ``file()`` reads any path, the
``default`` database overlays the filesystem (``SELECT * FROM `/etc/passwd` ``), and SQL users
cannot be created. So the endpoint decides itself, before execution, on the engine's own parse
tree (``EXPLAIN AST``): statement kinds, table functions, table/database engines and
dictionary sources are checked by name against the engine's own registries, ``INTO OUTFILE`` /
``FROM INFILE`` by the tree's shape. Setting names, which the tree prints only as ``Set``, come
from the lexer in ``tokens`` and must account for every ``Set`` node of the tree.
Refusals carry ClickHouse's own codes: ACCESS_DENIED (497, HTTP 403), READONLY (164) for a
write over GET, UNKNOWN_SETTING (115) for a setting the engine does not know.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from quant_dev.warehouse_server.protocol import ClickHouseError, error
from quant_dev.warehouse_server.tokens import (
    NUMBER,
    QUOTED,
    STRING,
    SYMBOL,
    WORD,
    LexError,
    Token,
    tokenize,
)

# The longest a client may let one query run, in seconds (the server's cap, not its default)
MAX_EXECUTION_TIME = 300.0

# Table functions and engines (table, database) that stay inside this server's data. Every
# other name the engine registers (file, url, s3, remote, mysql, executable, Kafka, File,
# Filesystem, ...) is refused wherever it appears in a statement.
ALLOWED_SOURCES = frozenset(
    {
        # table functions
        "numbers", "numbers_mt", "zeros", "zeros_mt", "generate_series", "generateseries",
        "values", "null", "view", "viewifpermitted", "format", "generaterandom", "merge",
        # table engines
        "mergetree", "replacingmergetree", "summingmergetree", "aggregatingmergetree",
        "collapsingmergetree", "versionedcollapsingmergetree", "coalescingmergetree",
        "graphitemergetree", "memory", "log", "tinylog", "stripelog", "set", "join", "buffer",
        "materializedview", "dictionary",
        # database engines
        "atomic", "ordinary", "lazy",
    }
)  # fmt: skip
# Ordinary functions that reach the host: file('path') reads a file, disk(...) defines a disk;
# introspection functions read the server's binary and memory (chDB enables them by default)
HOST_FUNCTIONS = frozenset(
    {"file", "disk", "addresstoline", "addresstolinewithinlines", "addresstosymbol", "demangle"}
)
DICTIONARY_SOURCES = frozenset({"clickhouse"})
# What a ClickHouse dictionary source may say: which table of this server
_DICTIONARY_SOURCE_KEYS = frozenset({"TABLE", "DB"})

# Settings a client may set (URL parameters, SET, SETTINGS clauses): what clickhouse-connect
# and this project send, and format/query knobs that neither name paths nor lift the caps.
ALLOWED_SETTINGS = frozenset(
    {
        # clickhouse-connect
        "date_time_input_format", "cast_string_to_dynamic_use_inference",
        "output_format_arrow_string_as_string", "output_format_json_quote_64bit_integers",
        "input_format_null_as_default", "session_timezone", "use_client_time_zone",
        "async_insert", "wait_for_async_insert",
        # the project (quant_resources/warehouse.py) and its migrations
        "insert_deduplication_token", "optimize_on_insert", "mutations_sync",
        "non_replicated_deduplication_window",
        # query shape and formats
        "max_threads", "max_block_size", "max_insert_block_size", "min_insert_block_size_rows",
        "min_insert_block_size_bytes", "max_result_rows", "max_result_bytes",
        "result_overflow_mode", "max_rows_to_read", "read_overflow_mode", "join_use_nulls",
        "join_algorithm", "final", "do_not_merge_across_partitions_select_final",
        "insert_deduplicate", "deduplicate_blocks_in_dependent_materialized_views",
        "lightweight_deletes_sync", "alter_sync", "allow_experimental_lightweight_delete",
        "enable_analyzer", "allow_experimental_analyzer", "allow_suspicious_low_cardinality_types",
        "output_format_json_quote_decimals", "output_format_json_named_tuples_as_objects",
        "output_format_decimal_trailing_zeros",
        "output_format_native_encode_types_in_binary_format",
        "output_format_arrow_low_cardinality_as_dictionary",
        "output_format_parquet_string_as_string",
        "input_format_skip_unknown_fields", "input_format_defaults_for_omitted_fields",
        "input_format_allow_errors_num", "input_format_allow_errors_ratio",
        "format_csv_delimiter", "format_csv_allow_single_quotes", "format_csv_allow_double_quotes",
        "date_time_output_format", "precise_float_parsing", "max_execution_time", "readonly",
        "max_query_size",
        # table settings (MergeTree)
        "index_granularity", "index_granularity_bytes", "min_bytes_for_wide_part",
        "min_rows_for_wide_part", "merge_with_ttl_timeout", "ttl_only_drop_parts",
        "allow_nullable_key",
    }
)  # fmt: skip

# Statement kinds, as the engine's tree names them. Read-only ones may come over GET.
_READ_KINDS = frozenset(
    {"SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "Explain",
     "DescribeQuery"}
)  # fmt: skip
_READ_PREFIXES = ("Show", "Exists")
_WRITE_KINDS = frozenset(
    {
        "InsertQuery", "CreateQuery", "AttachQuery", "AlterQuery", "DropQuery", "Rename",
        "OptimizeQuery", "TruncateQuery", "DeleteQuery", "UpdateQuery", "CheckQuery",
        "KillQueryQuery", "CreateSQLFunctionQuery", "DropFunctionQuery", "UndropQuery",
        "UseQuery", "Set", "CreateIndexQuery", "DropIndexQuery",
    }
)  # fmt: skip
_EXPLAIN_KINDS = ("AST", "SYNTAX", "TREE", "PLAN", "PIPELINE", "ESTIMATE")
# ALTER commands that reach beyond this server's tables (FETCH from another replica, FREEZE
# writes backup copies of parts)
_DENIED_ALTER = frozenset(
    {"FETCH_PARTITION", "FREEZE_PARTITION", "FREEZE_ALL", "UNFREEZE_PARTITION", "UNFREEZE_ALL"}
)


def access_denied(what: str) -> ClickHouseError:
    return error(
        "ACCESS_DENIED",
        f"{what} is not allowed: the quant warehouse endpoint does not let statements reach "
        "the host (files, URLs, other servers, programs, server settings)",
    )


def read_only_violation(kind: str) -> ClickHouseError:
    return error(
        "READONLY",
        f"Cannot execute query in readonly mode ({kind}). For queries over HTTP, method GET "
        "implies readonly. You should use method POST for modifying queries",
    )


@dataclass(frozen=True)
class Node:
    depth: int
    kind: str  # first word of the line
    text: str  # the whole line, stripped


def parse_tree(explain: str) -> list[Node]:
    """The lines of ``EXPLAIN AST`` output (one node per line, one space of indent per level).
    Names inside lines may contain newlines and so forge extra lines; every check below refuses
    on a line's presence, so a forged line can only refuse more, never hide a real node."""
    nodes = []
    for line in explain.splitlines():
        text = line.strip()
        if text:
            nodes.append(Node(len(line) - len(line.lstrip(" ")), text.split()[0], text))
    return nodes


@dataclass(frozen=True)
class Statement:
    kind: str
    read_only: bool

    @property
    def is_set(self) -> bool:
        return self.kind == "Set"


class Policy:
    """Decides on statements and settings; built from the engine's registries so that every
    table function and engine the engine knows is either allowed here or refused."""

    def __init__(self, sources: Iterable[str], known_settings: Iterable[str]):
        self.denied_sources = frozenset(s.lower() for s in sources) - ALLOWED_SOURCES
        self.denied_sources |= HOST_FUNCTIONS
        self.known_settings = frozenset(known_settings)

    # ---- settings ---------------------------------------------------------------------------

    def check_setting(self, name: str, value: str) -> None:
        if name.lower() not in ALLOWED_SETTINGS:
            if name not in self.known_settings:
                raise error("UNKNOWN_SETTING", f"Unknown setting '{name}'")
            raise access_denied(f"Setting '{name}'")
        if name.lower() == "max_execution_time":
            try:
                seconds = float(value)
            except ValueError:
                raise access_denied(f"Setting max_execution_time = {value!r}") from None
            if not 0 < seconds <= MAX_EXECUTION_TIME:
                raise access_denied(
                    f"Setting max_execution_time = {value!r} (the server allows 0 < value <= "
                    f"{MAX_EXECUTION_TIME:g})"
                )
        if name.lower() == "readonly" and value.strip() not in ("1", "2"):
            raise access_denied(f"Setting readonly = {value!r} (only 1 or 2)")

    def check_settings(self, settings: Mapping[str, str]) -> None:
        for name, value in settings.items():
            self.check_setting(name, str(value))

    # ---- statements -------------------------------------------------------------------------

    @staticmethod
    def lex(sql: str) -> list[Token]:
        """The statement's tokens; refuses several statements, which the engine would run one
        after the other (``EXPLAIN AST`` included)."""
        try:
            tokens = tokenize(sql)
        except LexError as exc:
            raise error("SYNTAX_ERROR", f"Syntax error: {exc}") from None
        for i, token in enumerate(tokens[:-1]):
            if token.kind == SYMBOL and token.text == ";" and not _is_symbol(tokens, i + 1, ";"):
                at = tokens[i + 1].offset
                raise error(
                    "SYNTAX_ERROR",
                    "Syntax error (Multi-statements are not allowed): failed at position "
                    f"{at + 1}: {sql[at : at + 40]!r}",
                )
        return tokens

    def check(self, sql: str, explain: str, method: str = "POST") -> Statement:
        """Refuse ``sql`` (whose ``EXPLAIN AST`` is ``explain``) unless it stays inside the
        server; returns what kind of statement it is."""
        tokens = self.lex(sql)
        nodes = parse_tree(explain)
        if not nodes:
            raise error("SYNTAX_ERROR", "Empty query")
        kind = nodes[0].kind
        read_only = kind in _READ_KINDS or kind.startswith(_READ_PREFIXES)
        if not read_only and kind not in _WRITE_KINDS:
            raise access_denied(f"Statement {nodes[0].text.split(' (')[0]!r}")
        self._check_nodes(nodes)
        self._check_tokens(tokens)
        if kind == "AttachQuery" and any(t.is_word("FROM") for t in tokens):
            raise access_denied("ATTACH ... FROM a path")
        self._check_settings_clauses(tokens, nodes)
        if any(n.text.startswith("Dictionary definition") for n in nodes):
            self._check_dictionary(tokens)
        if method == "GET" and not read_only:
            raise read_only_violation(kind)
        return Statement(kind, read_only)

    def _check_tokens(self, tokens: list[Token]) -> None:
        """What the tree does not show: the rows of ``INSERT ... VALUES`` (whose expressions
        the engine evaluates, ``file(...)`` included) and the INTO OUTFILE / FROM INFILE words."""
        for i, token in enumerate(tokens):
            if token.is_word("OUTFILE", "INFILE"):
                raise access_denied(f"INTO OUTFILE / FROM INFILE (at position {token.offset + 1})")
            called = token.kind in (WORD, QUOTED) and _is_symbol(tokens, i + 1, "(")
            if called and token.text.lower() in self.denied_sources:
                raise access_denied(
                    f"{token.text!r} (table function, engine or function, at position "
                    f"{token.offset + 1})"
                )
            if token.kind == QUOTED and "/" in token.text:
                raise access_denied(f"A table name that is a path ({token.text!r})")

    def _check_nodes(self, nodes: list[Node]) -> None:
        root = nodes[0].kind
        for node in nodes:
            words = node.text.split()
            if node.kind in ("Function", "FunctionWithKeyValueArguments") and len(words) > 1:
                name = words[1].lower()
                if node.kind == "FunctionWithKeyValueArguments":
                    if name not in DICTIONARY_SOURCES:
                        raise access_denied(f"Dictionary source {words[1]!r}")
                elif name in self.denied_sources:
                    raise access_denied(f"{words[1]!r} (table function, engine or function)")
            elif node.kind == "AlterCommand" and len(words) > 1 and words[1] in _DENIED_ALTER:
                raise access_denied(f"ALTER {words[1]}")
            elif (
                node.depth == 1
                and node.kind == "Literal"
                and root
                in (
                    "SelectWithUnionQuery",
                    "InsertQuery",
                )
            ):
                # The only literals hung on the statement itself are file names and their
                # compression: INTO OUTFILE 'f' / FROM INFILE 'f' [COMPRESSION 'c']
                raise access_denied("INTO OUTFILE / FROM INFILE")
            # The ``default`` database of chDB resolves unknown table names as file paths
            # (relative ones against the server's empty working directory)
            named = node.kind in ("TableIdentifier", "Identifier") or node.depth == 0
            if named and "/" in node.text.split(" (children")[0]:
                raise access_denied(f"A table name that is a path ({node.text!r})")

    def _check_settings_clauses(self, tokens: list[Token], nodes: list[Node]) -> None:
        # A SET statement is one clause led by SET (the app also checks what it changed)
        lead = ("SET",) if nodes[0].kind == "Set" else ("SETTINGS", "SETTING")
        clauses = settings_clauses(tokens, lead)
        expected = sum(1 for n in nodes if n.text == "Set")
        if nodes[0].kind == "Explain" and explain_options(tokens):
            expected -= 1  # options of EXPLAIN itself, not settings
        if len(clauses) != expected:
            raise access_denied(
                f"A SETTINGS clause this server cannot read ({expected} in the statement, "
                f"{len(clauses)} read)"
            )
        for clause in clauses:
            for name, value in clause:
                self.check_setting(name, value)

    @staticmethod
    def _check_dictionary(tokens: list[Token]) -> None:
        """A ClickHouse source may name a table of this server, nothing else: HOST/PORT reach
        another server, QUERY/WHERE/INVALIDATE_QUERY are SQL the engine runs unchecked."""
        for i, token in enumerate(tokens):
            if not (token.is_word("SOURCE") and _is_symbol(tokens, i + 1, "(")):
                continue
            j = i + 4  # past SOURCE ( CLICKHOUSE (
            while j < len(tokens) and not _is_symbol(tokens, j, ")"):
                key = tokens[j]
                if key.kind != WORD or key.text.upper() not in _DICTIONARY_SOURCE_KEYS:
                    raise access_denied(f"Dictionary source key {key.text!r}")
                value = tokens[j + 1] if j + 1 < len(tokens) else key
                if value.kind not in (WORD, QUOTED, STRING) or "/" in value.text:
                    raise access_denied(f"Dictionary source {key.text} {value.text!r}")
                j += 2


def _is_symbol(tokens: list[Token], i: int, text: str) -> bool:
    return i < len(tokens) and tokens[i].kind == SYMBOL and tokens[i].text == text


def _value_end(tokens: list[Token], i: int) -> int:
    """The index after the setting value starting at ``i``: a signed literal or word, a call
    ``f(...)`` or a bracketed group."""
    while _is_symbol(tokens, i, "-") or _is_symbol(tokens, i, "+"):
        i += 1
    if i < len(tokens) and tokens[i].kind in (WORD, QUOTED, STRING, NUMBER):
        i += 1
    if i < len(tokens) and tokens[i].kind == SYMBOL and tokens[i].text in "([":
        depth = 0
        while i < len(tokens):
            if tokens[i].kind == SYMBOL and tokens[i].text in "([":
                depth += 1
            elif tokens[i].kind == SYMBOL and tokens[i].text in ")]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
    return i


def _clause_at(tokens: list[Token], i: int) -> tuple[list[tuple[str, str]], int]:
    """The ``name = value, ...`` pairs after the lead word at ``i`` (optionally in parentheses)
    and the index after them."""
    j = i + 1 + _is_symbol(tokens, i + 1, "(")
    pairs = []
    while (
        j + 1 < len(tokens) and tokens[j].kind in (WORD, QUOTED) and _is_symbol(tokens, j + 1, "=")
    ):
        end = _value_end(tokens, j + 2)
        pairs.append((tokens[j].text, " ".join(t.text for t in tokens[j + 2 : end])))
        j = end
        if not _is_symbol(tokens, j, ","):
            break
        j += 1
    return pairs, j


def settings_clauses(
    tokens: list[Token], lead: tuple[str, ...] = ("SETTINGS", "SETTING")
) -> list[list[tuple[str, str]]]:
    """Every ``SETTINGS a = 1, b = 'x'`` (or ``SETTING``, or ``SETTINGS(...)``, or another
    ``lead`` word) clause as name/value pairs, values as written (strings unquoted)."""
    clauses = []
    i = 0
    while i < len(tokens):
        if not tokens[i].is_word(*lead):
            i += 1
            continue
        pairs, end = _clause_at(tokens, i)
        if pairs:
            clauses.append(pairs)
        i = max(end, i + 1)
    return clauses


def explain_options(tokens: list[Token]) -> list[tuple[str, str]]:
    """The options of ``EXPLAIN [kind] name = value, ...`` (the tree shows them as ``Set``)."""
    for i in (1, 2):
        if i < len(tokens) and tokens[i].is_word(*_EXPLAIN_KINDS):
            pairs, _ = _clause_at(tokens, i)
            if pairs:
                return pairs
    return []
