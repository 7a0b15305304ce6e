"""paravec: multimodal embedding models on vision-language LLMs, with the Parallel Decoupling Framework.

``paravec.load(name_or_folder)`` returns an :class:`~paravec.embedder.Embedder`;
``Embedder.encode(items)`` embeds :class:`~paravec.items.Item` objects.
"""

from paravec.embedder import Embedder, load
from paravec.items import Item

__all__ = ["Embedder", "Item", "load"]
__version__ = "0.1.0"
