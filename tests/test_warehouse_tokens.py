"""The endpoint's SQL lexer reads what ClickHouse's lexer reads: the policy takes setting names
and keywords from it, never from the raw text."""

from __future__ import annotations

import pytest

from quant_dev.warehouse_server.policy import Policy, settings_clauses
from quant_dev.warehouse_server.protocol import ClickHouseError
from quant_dev.warehouse_server.tokens import QUOTED, STRING, WORD, LexError, tokenize


def words(sql: str) -> list[str]:
    return [t.text for t in tokenize(sql) if t.kind == WORD]


def test_comments_strings_and_quoted_names_hide_nothing_they_should_not():
    assert words("SELECT /* a /* nested */ still comment */ 1 -- tail\n FROM t") == [
        "SELECT",
        "FROM",
        "t",
    ]
    assert words("SELECT 1 # comment OUTFILE\n, 2") == ["SELECT"]
    strings = [
        t.text for t in tokenize("SELECT 'it''s', 'a\\'b', $x$SETTINGS$x$") if t.kind == STRING
    ]
    assert strings == ["it's", "a'b", "SETTINGS"]
    quoted = [t.text for t in tokenize('SELECT `a``b`, "c\\nd"') if t.kind == QUOTED]
    assert quoted == ["a`b", "c\nd"]


@pytest.mark.parametrize("sql", ["SELECT 'open", "SELECT `open", "SELECT /* open", "SELECT $$ x"])
def test_unterminated_text_is_an_error(sql):
    with pytest.raises(LexError):
        tokenize(sql)


def test_settings_clauses_are_read_with_their_values():
    sql = (
        "SELECT * FROM (SELECT 1 SETTINGS max_threads = 2) /* SETTINGS max_memory_usage = 0 */ "
        "SETTINGS max_block_size = -10, `readonly` = '1', disk = disk(type = local, path = '/')"
    )
    assert settings_clauses(tokenize(sql)) == [
        [("max_threads", "2")],
        [
            ("max_block_size", "- 10"),
            ("readonly", "1"),
            ("disk", "disk ( type = local , path = / )"),
        ],
    ]
    assert settings_clauses(tokenize("SELECT 'SETTINGS a = 1' AS settings")) == []


@pytest.mark.parametrize(
    "sql", ["SELECT 1; SELECT 2", "SELECT 1 /* x */ ; DROP TABLE t", "SELECT ';'; SELECT 2"]
)
def test_several_statements_are_refused(sql):
    with pytest.raises(ClickHouseError) as err:
        Policy.lex(sql)
    assert err.value.code == 62


@pytest.mark.parametrize("sql", ["SELECT 1;", "SELECT 1 ;; ", "SELECT ';' /* ; */", "SELECT $$;$$"])
def test_one_statement_with_semicolons_inside_or_after_passes(sql):
    assert Policy.lex(sql)
