"""Fixtures of the serve tests; helpers live in :mod:`helpers`."""

import pytest


@pytest.fixture(scope="session")
def tiny_embedder():
    """The real tiny preset. Fails (never skips) if ``paravec.load`` is missing."""
    import paravec

    return paravec.load("tiny-qwen2-vl")
