from transformers import CLIPTokenizer

from hypersd.models.tokenizer import MAX_LENGTH, build_tokenizer, shapes_words


def test_every_shapes_word_is_one_token(tmp_path):
    tok = build_tokenizer(tmp_path)
    for word in shapes_words():
        ids = tok(word).input_ids
        assert len(ids) == 3 and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id, word


def test_unknown_words_fall_back_to_characters_and_reload(tmp_path):
    tok = build_tokenizer(tmp_path / "a")
    assert tok.convert_ids_to_tokens(tok("cat").input_ids)[1:-1] == ["c", "a", "t</w>"]
    tok.save_pretrained(tmp_path / "b")
    again = CLIPTokenizer.from_pretrained(tmp_path / "b")
    text = "a small red triangle to the left of a blue cross"
    assert again(text).input_ids == tok(text).input_ids
    assert again.model_max_length == MAX_LENGTH
