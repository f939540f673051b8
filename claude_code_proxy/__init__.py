"""claude-code-proxy: Anthropic- and OpenAI-compatible APIs served by the Claude Code CLI."""

__version__ = "0.1.0"
