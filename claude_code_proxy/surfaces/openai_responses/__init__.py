"""The OpenAI Responses surface, under ``/openai/v1/responses``: what Codex CLI and the
OpenAI Agents SDK speak."""

from claude_code_proxy.surfaces.openai_responses import errors, routes
from claude_code_proxy.surfaces.registry import Surface

SURFACE = Surface(
    name="openai_responses",
    label="openai_responses",
    prefixes=("/openai/v1/responses",),
    router=routes.router,
    error_body=errors.error_body,
    model_paths=frozenset({"/openai/v1/responses"}),
)
