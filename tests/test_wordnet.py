import nltk
import pytest

from dsspn_cli.errors import UserError
from dsspn_cli.hierarchy import wordnet as wordnet_module
from dsspn_cli.hierarchy.wordnet import DEBIAN_WORDNET_DIR, LEXNAMES, build_corpus, lexnames_text


def test_lexnames_is_wordnets_45_line_table():
    lines = lexnames_text().splitlines()
    assert len(lines) == 45 == len(LEXNAMES)
    assert lines[3] == "03\tnoun.Tops\t1"
    assert lines[29] == "29\tverb.body\t2"
    assert lines[44] == "44\tadj.ppl\t3"


@pytest.mark.skipif(not (DEBIAN_WORDNET_DIR / "data.noun").exists(),
                    reason="Debian's wordnet-base is not installed")
def test_corpus_built_from_debian_folder_reads_with_nltk(tmp_path, monkeypatch):
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))
    target = build_corpus(DEBIAN_WORDNET_DIR, tmp_path / "nltk_data")
    assert (target / "lexnames").is_file()
    reader = wordnet_module._reader_at(tmp_path / "nltk_data")
    assert reader.get_version() == "3.0"
    path = [s.name() for s in reader.synset("armchair.n.01").hypernym_paths()[0]]
    assert path[-3:] == ["seat.n.03", "chair.n.01", "armchair.n.01"]
    assert path[0] == "entity.n.01"
    # No half-built staging folders are left beside the corpus.
    assert [p.name for p in target.parent.iterdir()] == ["wordnet"]


def test_user_folder_that_is_not_wordnet_is_a_clear_error(tmp_path):
    (tmp_path / "data.noun").write_text("")
    with pytest.raises(UserError, match="not a WordNet 3.0 database folder"):
        build_corpus(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out" / "corpora" / "wordnet").exists()


def test_nothing_found_says_how_to_get_wordnet(tmp_path, monkeypatch):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty")])
    monkeypatch.setenv("DSSPN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DSSPN_WORDNET_DIR", raising=False)
    monkeypatch.setattr(wordnet_module, "DEBIAN_WORDNET_DIR", tmp_path / "nowhere")
    wordnet_module._load.cache_clear()
    try:
        with pytest.raises(UserError) as err:
            wordnet_module.wordnet()
        message = str(err.value)
        assert "apt-get install wordnet-base wordnet-sense-index" in message
        assert "nltk.download('wordnet')" in message
        assert "\n" not in message
    finally:
        wordnet_module._load.cache_clear()


def test_unknown_synset_names_the_source(wn):
    with pytest.raises(UserError, match="labels.yaml: unknown WordNet 3.0 synset 'carr.n.01'"):
        wordnet_module.synset("carr.n.01", source="labels.yaml")
