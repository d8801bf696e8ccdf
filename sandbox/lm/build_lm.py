"""Build the sandbox's clinical language model and dictionary from corpus.txt.

Run from the repository root:  python sandbox/lm/build_lm.py

Writes, next to this script:
- clinical.lm:   trigram ARPA model, built with pocketsphinx's own ARPA writer
                 (``pocketsphinx.lm.ArpaBoLM``: fixed-mass discounting with
                 back-off weights), so no extra dependency is needed.
- clinical.dict: pronunciations for exactly the corpus vocabulary, taken from
                 the cmudict bundled with pocketsphinx plus the hand-written
                 extra.dict for clinical words cmudict lacks (drug names etc.;
                 an extra.dict entry overrides cmudict).

The output is deterministic (sorted, no timestamps), so regenerating it on an
unchanged corpus gives byte-identical files.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pocketsphinx
from pocketsphinx.lm import ArpaBoLM

LM_DIR = Path(__file__).resolve().parent
CORPUS = LM_DIR / "corpus.txt"
EXTRA_DICT = LM_DIR / "extra.dict"
LM_OUT = LM_DIR / "clinical.lm"
DICT_OUT = LM_DIR / "clinical.dict"

# Share of probability mass every n-gram order gives up to its back-off; 0.5 is
# ArpaBoLM's default and suits a small corpus where unseen word pairs are common.
DISCOUNT_MASS = 0.5

_NOT_WORD = re.compile(r"[^a-z' ]+")
_ALT_SUFFIX = re.compile(r"\(\d+\)$")


def normalize(line: str) -> str:
    """Lowercase and drop punctuation so corpus tokens match dictionary entries."""
    return " ".join(_NOT_WORD.sub(" ", line.lower()).split())


def read_corpus(path: Path) -> list[str]:
    """Return the normalized, non-empty, non-comment sentences of the corpus."""
    sentences = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.lstrip().startswith("#"):
            continue
        sentence = normalize(raw)
        if sentence:
            sentences.append(sentence)
    return sentences


def vocabulary(sentences: Iterable[str]) -> list[str]:
    """Sorted distinct words, i.e. what the dictionary must cover."""
    return sorted({word for sentence in sentences for word in sentence.split()})


def build_arpa(sentences: Sequence[str], discount_mass: float = DISCOUNT_MASS) -> str:
    """Return a trigram ARPA model of the sentences, with <s>/</s> boundaries."""
    model = ArpaBoLM(text="\n".join(sentences), add_start=True, discount_mass=discount_mass)
    model.compute()
    model.sent_count = len(sentences)  # ArpaBoLM leaves its header's count at 0
    out = io.StringIO()
    model.write(out)
    return out.getvalue()


def read_pronunciations(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Map base word -> [(entry name, phones)] from a CMU-style dictionary file."""
    entries: dict[str, list[tuple[str, str]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or line.startswith(";;;"):
            continue
        name, phones = parts[0], " ".join(parts[1].split("#")[0].split())
        entries.setdefault(_ALT_SUFFIX.sub("", name), []).append((name, phones))
    return entries


def build_dict(words: Iterable[str], *sources: dict[str, list[tuple[str, str]]]) -> str:
    """Return dictionary text for the words; the first source that knows a word wins."""
    lines: list[str] = []
    missing: list[str] = []
    for word in words:
        found = next((source[word] for source in sources if word in source), None)
        if found is None:
            missing.append(word)
            continue
        lines.extend(f"{name} {phones}" for name, phones in found)
    if missing:
        raise SystemExit(
            f"no pronunciation for {', '.join(missing)}: add them to {EXTRA_DICT.name}"
        )
    return "\n".join(lines) + "\n"


def render() -> tuple[str, str]:
    """(ARPA text, dictionary text) for the committed corpus, without writing anything."""
    sentences = read_corpus(CORPUS)
    cmudict = read_pronunciations(Path(pocketsphinx.get_model_path("en-us/cmudict-en-us.dict")))
    extra = read_pronunciations(EXTRA_DICT)
    return build_arpa(sentences), build_dict(vocabulary(sentences), extra, cmudict)


def main() -> None:
    """Regenerate clinical.lm and clinical.dict from the committed corpus."""
    lm_text, dict_text = render()
    LM_OUT.write_text(lm_text, encoding="utf-8")
    DICT_OUT.write_text(dict_text, encoding="utf-8")
    print(f"wrote {LM_OUT.name} and {DICT_OUT.name} ({len(dict_text.splitlines())} entries)")


if __name__ == "__main__":
    main()
