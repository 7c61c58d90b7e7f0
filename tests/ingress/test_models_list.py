"""``GET /v1/models`` read by both families' unmodified SDKs from one body."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.sidecar_server import TOKEN, RunningSidecar


def test_openai_sdk_lists_the_servable_models(sidecar: RunningSidecar) -> None:
    with openai.OpenAI(base_url=f"{sidecar.url}/v1", api_key=TOKEN, max_retries=0) as sdk:
        models = {m.id: m for m in sdk.models.list()}
    assert {"openai/gpt-4o", "anthropic/claude-sonnet-4-5", "echo/echo"} <= models.keys()
    assert models["openai/gpt-4o"].owned_by == "openai"


def test_anthropic_sdk_lists_the_servable_models_with_display_names(sidecar: RunningSidecar) -> None:
    with anthropic.Anthropic(base_url=sidecar.url, api_key=TOKEN, max_retries=0) as sdk:
        models = list(sdk.models.list(limit=1000))
    ids = [m.id for m in models]
    assert "anthropic/claude-sonnet-4-5" in ids
    # Claude Code's discovery drops the whole list when a display_name is null.
    assert all(isinstance(m.display_name, str) and m.display_name for m in models)


def test_a_wrong_key_is_refused(sidecar: RunningSidecar) -> None:
    with anthropic.Anthropic(base_url=sidecar.url, api_key="wrong-key", max_retries=0) as sdk:
        with pytest.raises(anthropic.AuthenticationError):
            list(sdk.models.list())
