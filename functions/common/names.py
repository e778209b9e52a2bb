"""Person-name search keys: case and accents folded, split into words.

``Müller^Hans=ミュラー^ハンス`` gives ``["muller", "hans", "ミュラー", "ハンス"]``:
every word of every component group (alphabetic, ideographic, phonetic) is a key,
so that a search for the prefix of any word finds the patient.
"""

from __future__ import annotations

import re
import unicodedata

_SEPARATORS = re.compile(r"[\^=\s,]+")
# Kana voicing marks are part of the letter (だ is not た): never dropped.
_KEEP_MARKS = frozenset("\u3099\u309a")


def fold(text: str) -> str:
    """Case-fold and strip accents (NFKD, then drop combining marks except kana voicing).

    NFKD also maps compatibility forms to their plain letters (half-width katakana
    ``ﾀﾞ`` to ``ダ``, full-width Latin to ASCII), so every spelling of a name folds alike.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if c in _KEEP_MARKS or not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped).casefold()


def name_words(name: str) -> list[str]:
    """Distinct folded words of a DICOM person name, in order of appearance."""
    words: list[str] = []
    for raw in _SEPARATORS.split(fold(name)):
        word = raw.strip(".-'")
        if word and word not in words:
            words.append(word)
    return words


def pn_to_text(pn_json: dict[str, str] | str | None) -> str:
    """Flatten a DICOM JSON person name value into ``alpha=ideo=phon``."""
    if pn_json is None:
        return ""
    if isinstance(pn_json, str):
        return pn_json
    groups = [pn_json.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
    return "=".join(groups).rstrip("=")
