"""Side-by-side benchmark of the proxy against direct SDK use, on the fake upstream.

``python -m bench`` (or ``make bench``) runs it; ``python -m bench.profile`` profiles the
streaming hot path.  Not part of the test suite; see docs/performance.md.
"""
