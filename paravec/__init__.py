"""paravec: multimodal embedding models on vision-language LLMs, with the Parallel Decoupling Framework.

``paravec.load(name_or_folder)`` returns an :class:`~paravec.embedder.Embedder`;
``Embedder.encode(items)`` embeds :class:`~paravec.items.Item` objects.

The heavy modules (torch, transformers) load on first use of ``load`` or ``Embedder``, so
importing a light submodule (``paravec.items``, ``paravec.core``) stays fast.
"""

from paravec.items import Item

__all__ = ["Embedder", "Item", "load"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("Embedder", "load"):
        from paravec import embedder

        return getattr(embedder, name)
    raise AttributeError(f"module 'paravec' has no attribute {name!r}")
