"""Prompt formats: the paper's eq. 1, VLM2Vec's, and paravec 0.1's, on the inputs users give."""

import pytest
from PIL import Image

from paravec.items import PROMPT_FORMATS, Item

IMAGE = Image.new("RGB", (8, 8))
TOKEN = "<image>"


def render(name, item):
    return PROMPT_FORMATS[name].render(item, TOKEN)


def test_the_paper_puts_the_image_first_then_the_instruction():
    query = Item(text="<|image_1|> What colour is it?", image=IMAGE, instruction="Answer the question")
    assert render("paper", query) == "<image> Instruct: Answer the question Query: What colour is it?"
    assert render("paper", Item(text="a red dot", image=IMAGE, instruction="Find it")) == \
        "<image> Instruct: Find it Query: a red dot"
    assert render("paravec-0.1", query) == "Instruct: Answer the question Query: <image> What colour is it?"


def test_mmeb_rows_hold_their_instruction_and_keep_their_text():
    row = Item(text="<|image_1|>\nRepresent the given image for classification\n", image=IMAGE)
    for name in ("paper", "paravec-0.1", "vlm2vec"):
        assert render(name, row) == "<image>\nRepresent the given image for classification\n"


def test_vlm2vec_joins_image_instruction_and_text_with_spaces():
    assert render("vlm2vec", Item(text="What colour?", image=IMAGE, instruction="Answer")) == "<image> Answer What colour?"
    assert render("vlm2vec", Item(text="<|image_1|>\nWhat colour?", image=IMAGE, instruction="Answer")) == \
        "<image> Answer What colour?"
    assert render("vlm2vec", Item(image=IMAGE)) == "<image>"
    assert render("vlm2vec", Item(text="a caption")) == "a caption"


@pytest.mark.parametrize("name", list(PROMPT_FORMATS))
def test_a_placeholder_needs_an_image_and_only_one(name):
    with pytest.raises(ValueError, match="no image"):
        render(name, Item(text="<|image_1|> hi"))
    with pytest.raises(ValueError, match="one image"):
        render(name, Item(text="<|image_1|> <|image_1|>", image=IMAGE))
