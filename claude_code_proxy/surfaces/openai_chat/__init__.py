"""The OpenAI Chat Completions surface, under ``/openai/v1``: chat completions and models."""

from claude_code_proxy.surfaces.openai_chat import errors, routes
from claude_code_proxy.surfaces.registry import Surface

SURFACE = Surface(
    name="openai_chat",
    label="openai",
    prefixes=("/openai",),
    router=routes.router,
    error_body=errors.error_body,
    model_paths=frozenset({"/openai/v1/chat/completions"}),
)
