"""A paravec model as a sentence-transformers model: ``SentenceTransformer(folder, trust_remote_code=True)``.

Every ``paravec export`` folder is also a sentence-transformers folder (:func:`write_st_files`):

- ``modules.json``: this module (:class:`ParavecEmbedder`) first, then the stock ``Normalize``;
- ``paravec_st.py``: a one-line shim naming this class, which sentence-transformers imports from
  the folder (it only imports code sitting in the model's root, and only with
  ``trust_remote_code=True``); the code itself is this installed module, so ``paravec`` must be
  installed where the folder is loaded;
- ``paravec_st_config.json``: the inference mode;
- ``config_sentence_transformers.json``: prompts and ``similarity_fn_name: cosine``.

Why a custom module: the exported model carries a learned deep prefix (keys and values in front of
every layer), which no stock module can feed; and paravec's prompt format (the instruction
template, the image token text, 1-D positions for VLM2Vec-format models) is not the chat-template
rendering the stock ``Transformer`` applies. Even a prefix-free merged export reads differently
with the stock modules (they wrap every input in the chat template and drop the prompt for
images), and on Qwen2-VL they need torchvision for the processor's video part.

Inputs, in sentence-transformers' own forms: a ``str`` (text), a PIL image, or a dict
``{"image": ..., "text": ...}`` (image + text; an MMEB ``<|image_1|>`` placeholder in the text is
honoured). A prompt (``prompt=``, ``prompt_name=``, or ``encode_query``'s ``"query"``) becomes the
item's *instruction*: the paper's query template is applied to it, not a raw string prefix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from PIL import Image
from sentence_transformers.base.modules import InputModule

from paravec.items import Item

SHIM_FILE = "paravec_st.py"
CONFIG_FILE = "paravec_st_config.json"
MODULE_REF = "paravec_st.ParavecEmbedder"
NORMALIZE_DIR = "1_Normalize"
NORMALIZE_REF = "sentence_transformers.base.modules.normalize.Normalize"


class ParavecEmbedder(InputModule):
    """The paravec embedder of a model folder as a sentence-transformers input module."""

    config_file_name = CONFIG_FILE
    config_keys = ["mode"]
    save_in_root = True

    def __init__(self, model_dir: str, mode: str | None = None) -> None:
        super().__init__()
        import paravec

        self.model_dir = str(model_dir)
        self.embedder = paravec.load(model_dir, mode=mode)
        self.mode = self.embedder.mode
        # Registered so that .to(device) and .parameters() reach the backbone.
        self.model = self.embedder.model

    @property
    def modalities(self) -> list:
        return ["text", "image", ("image", "text")]

    def preprocess(self, inputs: Sequence[Any], prompt: str | None = None, **kwargs) -> dict[str, Any]:
        items = [_item(value, prompt) for value in inputs]
        return self.model.prepare(items)

    def forward(self, features: dict[str, Any], **kwargs) -> dict[str, Any]:
        batch = {key: value for key, value in features.items() if key != "sentence_embedding"}
        features["sentence_embedding"] = self.model.embed(batch, self.mode).float()
        return features

    def get_embedding_dimension(self) -> int:
        return self.embedder.dim

    def save(self, output_path: str, *args, safe_serialization: bool = True, **kwargs) -> None:
        from paravec.embedder import write_embedder_files

        write_embedder_files(self.model, self.embedder.spec, Path(output_path), with_backbone=True)
        self.save_config(output_path)
        (Path(output_path) / SHIM_FILE).write_text(SHIM_SOURCE, encoding="utf-8")

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", token=None, cache_folder=None, revision=None,
             local_files_only: bool = False, **kwargs) -> "ParavecEmbedder":
        hub = dict(subfolder=subfolder, token=token, cache_folder=cache_folder, revision=revision,
                   local_files_only=local_files_only)
        folder = cls.load_dir_path(model_name_or_path, **hub)
        config = cls.load_config(model_name_or_path, **hub)
        return cls(folder, **config)


def _item(value: Any, prompt: str | None) -> Item:
    """One sentence-transformers input as a paravec item; the prompt is the query's instruction."""
    instruction = prompt or None
    if isinstance(value, str):
        return Item(text=value, instruction=instruction)
    if isinstance(value, Image.Image):
        return Item(image=value.convert("RGB"), instruction=instruction)
    if isinstance(value, dict) and set(value) <= {"text", "image"} and value:
        image = value.get("image")
        if image is not None and not isinstance(image, Image.Image):
            raise TypeError(f"image inputs must be PIL images, got {type(image).__name__}")
        return Item(text=value.get("text") or None, image=None if image is None else image.convert("RGB"),
                    instruction=instruction)
    raise TypeError(f"unsupported input {type(value).__name__}: give a str, a PIL image or a dict with 'text' and/or 'image'")


SHIM_SOURCE = '''"""sentence-transformers loads this file from the model folder; the code is paravec's (pip install paravec)."""
from paravec.integrations.sentence_transformers import ParavecEmbedder  # noqa: F401
'''


def write_st_files(folder: Path, mode: str, prompts: dict[str, str]) -> None:
    """Make an exported paravec folder a sentence-transformers folder too (see the module docstring)."""
    import sentence_transformers
    import transformers

    modules = [
        {"idx": 0, "name": "0", "path": "", "type": MODULE_REF},
        {"idx": 1, "name": "1", "path": NORMALIZE_DIR, "type": NORMALIZE_REF},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2), encoding="utf-8")
    (folder / NORMALIZE_DIR).mkdir(exist_ok=True)
    (folder / NORMALIZE_DIR / "config.json").write_text(json.dumps({}), encoding="utf-8")
    (folder / CONFIG_FILE).write_text(json.dumps({"mode": mode}, indent=2), encoding="utf-8")
    (folder / SHIM_FILE).write_text(SHIM_SOURCE, encoding="utf-8")
    config = {
        "model_type": "SentenceTransformer",
        "__version__": {"sentence_transformers": sentence_transformers.__version__,
                        "transformers": transformers.__version__, "pytorch": torch.__version__},
        "prompts": prompts,
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    (folder / "config_sentence_transformers.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
