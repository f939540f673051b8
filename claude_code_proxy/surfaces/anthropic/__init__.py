"""The Anthropic Messages surface: ``/v1/messages`` (also at ``/v1/chat/completions``), ``/v1/models``."""

from claude_code_proxy.surfaces.anthropic import errors, routes
from claude_code_proxy.surfaces.registry import Surface

SURFACE = Surface(
    name="anthropic",
    label="anthropic",
    prefixes=("/v1",),
    router=routes.router,
    error_body=errors.error_body,
    model_paths=frozenset({"/v1/messages", "/v1/chat/completions"}),
)
