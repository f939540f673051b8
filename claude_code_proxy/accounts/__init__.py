"""Named API keys and their limits."""
