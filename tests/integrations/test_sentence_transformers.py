"""Every export loads with sentence-transformers, in a clean offline process, and embeds as paravec does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml
from PIL import Image

import paravec
from paravec.export import ST_PROMPTS
from paravec.items import Item

from .conftest import EXPORTS

TEXT = "a red circle above a blue square"
PAIR_TEXT = "<|image_1|> What colour is the circle?"

ST_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import numpy as np
    from PIL import Image
    from sentence_transformers import SentenceTransformer

    photo, out, (TEXT, PAIR_TEXT), folders = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:]
    image = Image.open(photo)
    results = {}
    for index, folder in enumerate(folders):
        model = SentenceTransformer(folder, trust_remote_code=True, local_files_only=True, device="cpu")
        results[f"{index}/text"] = model.encode([TEXT, "a small green triangle"])
        results[f"{index}/image"] = model.encode([image])
        results[f"{index}/pair"] = model.encode([{"image": image, "text": PAIR_TEXT}])
        results[f"{index}/query"] = model.encode_query([TEXT])
        results[f"{index}/document"] = model.encode_document([TEXT])
        results[f"{index}/dim"] = np.array(model.get_embedding_dimension())
        results[f"{index}/similarity"] = np.array(model.similarity_fn_name == "cosine")
    np.savez(out, **results)
    """
)


@pytest.fixture(scope="module")
def st_outputs(exports, photo, tmp_path_factory):
    """One fresh process, network off, no paravec state: what a user's script would get."""
    out = tmp_path_factory.mktemp("st") / "embeddings.npz"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_MODULES_CACHE": str(out.parent / "modules"), "OMP_NUM_THREADS": "1"}
    folders = [str(exports[name]) for name in EXPORTS]
    done = subprocess.run([sys.executable, "-c", ST_SCRIPT, str(photo), str(out), json.dumps([TEXT, PAIR_TEXT]), *folders], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = np.load(out)
    return {name: {key.split("/", 1)[1]: outputs[key] for key in outputs.files if key.startswith(f"{index}/")}
            for index, name in enumerate(EXPORTS)}


@pytest.mark.parametrize("name", list(EXPORTS))
def test_sentence_transformers_embeds_as_paravec(st_outputs, exports, photo, name):
    embedder = paravec.load(exports[name])
    image = Image.open(photo).convert("RGB")
    got = st_outputs[name]
    expected = {
        "text": embedder.encode([Item(text=TEXT), Item(text="a small green triangle")]),
        "image": embedder.encode([Item(image=image)]),
        "pair": embedder.encode([Item(text=PAIR_TEXT, image=image)]),
        "query": embedder.encode([Item(text=TEXT, instruction=ST_PROMPTS["query"])]),
        "document": embedder.encode([Item(text=TEXT)]),
    }
    for key, vectors in expected.items():
        np.testing.assert_allclose(got[key], vectors, atol=1e-5, err_msg=key)
    assert int(got["dim"]) == embedder.dim and bool(got["similarity"])
    assert np.abs(got["query"] - got["document"]).max() > 1e-3  # the query prompt is an instruction


def test_the_model_card_front_matter_is_what_the_hub_reads(exports):
    for folder in exports.values():
        text = (folder / "README.md").read_text()
        assert text.startswith("---\n")
        meta = yaml.safe_load(text.split("---\n")[1])
        assert meta["library_name"] == "sentence-transformers" and meta["pipeline_tag"] == "feature-extraction"
        assert {"paravec", "sentence-transformers"} <= set(meta["tags"]) and meta["license"] == "other"
        assert "base_model" not in meta  # a preset is no hub model
        assert meta["datasets"] == []  # the mini benchmark is no hub dataset
        assert "SentenceTransformer(" in text and "client.embeddings.create" in text
        modules = json.loads((folder / "modules.json").read_text())
        assert [m["type"] for m in modules] == ["paravec_st.ParavecEmbedder",
                                                "sentence_transformers.base.modules.normalize.Normalize"]


def test_the_front_matter_names_hub_models_and_datasets(exports, tmp_path):
    from paravec.export import _front_matter, read_run

    source = read_run(exports["path0"].parent / "run")
    source.config["data"]["train_dir"] = "data/MMEB-train"
    lines = _front_matter(source, source.spec, _result(exports["path0"]), "Qwen/Qwen2-VL-2B-Instruct")
    meta = yaml.safe_load("\n".join(lines[1:-2]))
    assert meta["base_model"] == "Qwen/Qwen2-VL-2B-Instruct" and meta["datasets"] == ["TIGER-Lab/MMEB-train"]


def _result(folder):
    from paravec.export import ExportResult, ParameterCounts

    return ExportResult(folder, "path0", "path0", False, 64, ParameterCounts(1, 0, 0, 0), None)


def test_a_prefix_free_merged_export_is_a_plain_hugging_face_checkpoint(exports, photo):
    """transformers' AutoModel reads the folder; the last token's state, normalised, is paravec's
    embedding once the prompt is built as paravec builds it."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel

    folder = exports["no-prefix-merged"]
    embedder = paravec.load(folder)
    assert embedder.spec.backbone == "." and (folder / "config.json").is_file()
    assert "plain Hugging Face checkpoint" not in (exports["path0"] / "README.md").read_text()
    assert "cannot serve this mode" in (exports["path0"] / "README.md").read_text()
    model = AutoModel.from_pretrained(folder).eval()
    items = [Item(text=TEXT), Item(text=PAIR_TEXT, image=Image.open(photo).convert("RGB"))]
    adapter = embedder.model.adapter
    for item, expected in zip(items, embedder.encode(items)):
        batch = adapter.collate(embedder.model.prompts([item]), [item.image])
        positions = adapter.position_ids(batch)
        with torch.no_grad():
            hidden = model(**batch, position_ids=positions).last_hidden_state
        np.testing.assert_allclose(F.normalize(hidden[0, -1], dim=-1).numpy(), expected, atol=1e-5)
