"""The Ollama surface, at the server root: ``GET|HEAD /`` and everything under ``/api``
(and the same under ``/openai/api``, for GitHub Copilot: see routes.py).

Only ``/`` itself is Ollama's at the root (an exact path, not a prefix), so an unknown path
elsewhere keeps the default error shape.  Ollama's own documentation posts JSON with
``curl -d`` and no JSON content type, so this surface takes a JSON body whatever its
Content-Type (a browser's cross-site request is still refused by its Origin header).
"""

from claude_code_proxy.surfaces.ollama import errors, routes
from claude_code_proxy.surfaces.registry import Surface

SURFACE = Surface(
    name="ollama",
    label="ollama",
    prefixes=("/api", "/openai/api"),
    exact_paths=frozenset({"/"}),
    router=routes.router,
    error_body=errors.error_body,
    model_paths=frozenset({"/api/chat", "/api/generate", "/openai/api/chat", "/openai/api/generate"}),
    # With an API key set, even "/" needs it, as every route but /health does.
    # Liveness probes and the polls some clients make every few seconds.
    quiet_paths=frozenset({"/", "/api/version", "/api/ps", "/openai/api/version", "/openai/api/ps"}),
    accepts_any_content_type=True,
)
