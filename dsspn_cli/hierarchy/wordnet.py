"""WordNet 3.0 through NLTK's reader.

The reviewed synsets of the built-in label sets are WordNet 3.0 names, so the reader must serve
3.0. It is looked for, in order:

1. a WordNet database folder the user names (``DSSPN_WORDNET_DIR``, or ``--wordnet-dir``),
   built once into the dsspn cache;
2. the standard NLTK data (``nltk.download('wordnet')``, ``NLTK_DATA``, ``~/nltk_data``...);
3. a corpus dsspn built earlier in its cache;
4. Debian's ``wordnet-base`` + ``wordnet-sense-index`` database in ``/usr/share/wordnet``,
   built once into the cache.

NLTK's reader needs a ``lexnames`` table that Debian does not ship, and NLTK only reads corpora
below a folder on ``nltk.data.path``; the cache is therefore ``<cache>/nltk_data/corpora/wordnet``
with the database files copied in and ``lexnames`` written beside them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

from dsspn_cli.errors import UserError, os_problem

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")

# The files NLTK's WordNetCorpusReader opens (data/index per part of speech, the exception
# lists) plus the sense index used for lemma keys.
DATABASE_FILES = (
    "data.noun", "data.verb", "data.adj", "data.adv",
    "index.noun", "index.verb", "index.adj", "index.adv",
    "noun.exc", "verb.exc", "adj.exc", "adv.exc",
    "index.sense",
)

# WordNet 3.0's table of lexicographer files (lexnames(5WN)): number, name, syntactic category.
LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}

STAMP = "dsspn-source.txt"

HOW_TO_GET = (
    "WordNet 3.0 not found: install Debian's packages (apt-get install wordnet-base "
    "wordnet-sense-index), or run python -c \"import nltk; nltk.download('wordnet')\" with "
    "internet, or set DSSPN_WORDNET_DIR to a WordNet 3.0 'dict' folder"
)


def cache_dir() -> Path:
    """Where dsspn keeps what it builds once (``DSSPN_CACHE``, else the XDG cache)."""
    if os.environ.get("DSSPN_CACHE"):
        return Path(os.environ["DSSPN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dsspn"


def lexnames_text() -> str:
    lines = []
    for number, name in enumerate(LEXNAMES):
        lines.append(f"{number:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n")
    return "".join(lines)


def build_corpus(source: Path, nltk_root: Path) -> Path:
    """Copy a WordNet 3.0 database folder into ``<nltk_root>/corpora/wordnet`` with ``lexnames``.

    Written to a temporary folder and renamed into place, so an interrupted build never leaves a
    corpus that NLTK would half-read.
    """
    source = Path(source)
    missing = [name for name in DATABASE_FILES if not (source / name).is_file()]
    if missing:
        raise UserError(
            f"{source}: not a WordNet 3.0 database folder (missing {', '.join(missing[:3])}); "
            "point to the folder holding data.noun and index.noun (Debian: /usr/share/wordnet)"
        )
    target = nltk_root / "corpora" / "wordnet"
    stamp = _stamp(source)
    if (target / STAMP).is_file() and (target / STAMP).read_text() == stamp:
        return target                   # built from this very folder before
    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
        for name in DATABASE_FILES:
            shutil.copyfile(source / name, staging / name)
        if (source / "lexnames").is_file():
            shutil.copyfile(source / "lexnames", staging / "lexnames")
        else:
            (staging / "lexnames").write_text(lexnames_text())
        (staging / STAMP).write_text(stamp)
        # Swap in the new corpus: move the old one aside first, so a reader never finds a
        # folder with files missing (a concurrent build's rename simply wins).
        old = None
        if target.exists():
            old = target.parent / f".old-{os.getpid()}-{target.name}"
            os.replace(target, old)
        os.replace(staging, target)
        staging = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise UserError(f"{target}: cannot build the WordNet cache: {os_problem(exc)}; or set "
                        "DSSPN_CACHE to a writable folder") from None
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _stamp(source: Path) -> str:
    """Where a corpus was built from, and that folder's data.noun size and time."""
    info = (source / "data.noun").stat()
    return f"{source.resolve()} {info.st_size} {int(info.st_mtime)}\n"


def _reader_at(nltk_root: Path | None):
    """NLTK's reader for ``corpora/wordnet`` below ``nltk_root`` (None: NLTK's own search path)."""
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    if nltk_root is not None and str(nltk_root) not in nltk.data.path:
        nltk.data.path.insert(0, str(nltk_root))
    try:
        location = nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            location = nltk.data.find("corpora/wordnet.zip/wordnet/")
        except LookupError:
            return None
    if nltk_root is not None and not str(location).startswith(str(nltk_root)):
        return None
    with warnings.catch_warnings():
        # Without the Open Multilingual WordNet NLTK warns at every load; dsspn is English only.
        warnings.simplefilter("ignore", UserWarning)
        return WordNetCorpusReader(location, None)


@lru_cache(maxsize=None)
def _load(user_dir: str | None):
    cached_root = cache_dir() / "nltk_data"
    if user_dir:
        user_root = cache_dir() / "nltk_data-user"
        build_corpus(Path(user_dir), user_root)
        reader = _reader_at(user_root)
    else:
        reader = _reader_at(None)
        if reader is None and (cached_root / "corpora" / "wordnet" / "lexnames").is_file():
            reader = _reader_at(cached_root)
        if reader is None and (DEBIAN_WORDNET_DIR / "data.noun").is_file():
            build_corpus(DEBIAN_WORDNET_DIR, cached_root)
            reader = _reader_at(cached_root)
    if reader is None:
        raise UserError(HOW_TO_GET)
    version = reader.get_version()
    if version != "3.0":
        raise UserError(
            f"WordNet {version} found, but dsspn's synsets are WordNet 3.0 names; "
            "install WordNet 3.0 (nltk.download('wordnet') or Debian's wordnet-base)"
        )
    return reader


def wordnet(user_dir: str | os.PathLike | None = None):
    """The WordNet 3.0 reader (an ``nltk.corpus.reader.wordnet.WordNetCorpusReader``)."""
    user_dir = user_dir or os.environ.get("DSSPN_WORDNET_DIR") or None
    return _load(str(user_dir) if user_dir else None)


def synset(name: str, source: str = "", user_dir=None):
    """The synset called ``name`` (``car.n.01``); a clear error naming ``source`` if unknown."""
    from nltk.corpus.reader.wordnet import WordNetError

    try:
        return wordnet(user_dir).synset(name)
    except (WordNetError, ValueError):
        where = f"{source}: " if source else ""
        raise UserError(
            f"{where}unknown WordNet 3.0 synset '{name}'; use a name like 'car.n.01' "
            "(look it up with: python -c \"from nltk.corpus import wordnet; "
            "print(wordnet.synsets('car'))\")"
        ) from None
