"""One table maps HTTP statuses to error types (mappings/errors.yaml): the gateway's own errors
and the error specs read it, so the same status gets the same type from both."""
from __future__ import annotations

import pytest

from engine.catalog import Catalog, load_dir
from engine.error_types import ERRORS_FILE, shipped
from engine.functions import TranslationError
from engine.server.api_errors import anthropic_body, openai_body

STATUSES = (400, 401, 403, 404, 405, 409, 413, 422, 429, 500, 502, 503, 504, 529, 530)


@pytest.fixture(scope="module")
def catalog():
    return Catalog.load()


def test_the_table_fills_any_status_from_its_4xx_and_5xx_rows():
    t = shipped()
    assert t.type_of("anthropic", 404) == "not_found_error"
    assert t.type_of("anthropic", 418) == "invalid_request_error"
    assert t.type_of("anthropic", 599) == "api_error"
    assert t.type_of("openai", 413) == "invalid_request_error"
    assert t.type_of("openai", 503) == "server_error"


@pytest.mark.parametrize("status", STATUSES)
def test_gateway_errors_take_their_type_from_the_table(status):
    assert openai_body(status, "m")["error"]["type"] == shipped().type_of("openai", status)
    assert anthropic_body(status, "m")["error"]["type"] == shipped().type_of("anthropic", status)


@pytest.mark.parametrize("status", STATUSES)
def test_a_translated_upstream_error_has_the_type_the_gateway_gives_its_status(catalog, status):
    """The error specs call error_type() on the status they answer with: a client sees one type
    per status, whether the gateway or the upstream refused the request."""
    src = {"status": status, "body": None, "text": "boom", "provider": "up", "retry_after": None}
    out = catalog.get("messages-to-chat/error", "2025-06-01").apply(src=src)
    assert out["body"]["error"]["type"] == anthropic_body(out["status"], "m")["error"]["type"]
    for name in ("chat-to-messages/error", "responses-to-messages/error"):
        out = catalog.get(name, "2025-06-01").apply(src=src)
        assert out["body"]["error"]["type"] == openai_body(out["status"], "m")["error"]["type"], name


def test_engine_check_reports_a_broken_table_with_file_and_line(tmp_path):
    (tmp_path / "errors.yaml").write_text(ERRORS_FILE.read_text().replace("    5xx: server_error\n", ""))
    _, errors = load_dir(tmp_path)
    assert len(errors) == 1 and "errors.yaml" in str(errors[0]) and "'5xx' is a required property" in str(errors[0])
    (tmp_path / "errors.yaml").write_text(ERRORS_FILE.read_text())
    assert load_dir(tmp_path) == ([], [])


def test_error_type_names_an_unknown_client_api():
    from engine.functions import Functions
    with pytest.raises(TranslationError, match="no client API 'toy'.*anthropic, openai"):
        Functions()._func_error_type("toy", 400)
