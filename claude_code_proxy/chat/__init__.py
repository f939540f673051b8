"""The neutral chat types every surface translates to and from, and the content rules they share.

``request``: the ``ChatRequest`` a surface's translator builds (already in Anthropic wire form).
``answer``: what a backend run yields, and the whole ``Answer`` assembled from it.
``content``: checks and conversation-shape rules shared by every translator.
No surface owns this package; surfaces import from it, never from each other.
"""
