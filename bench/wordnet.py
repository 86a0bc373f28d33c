"""WordNet 3.0 synsets as memories: "its words: its definition", with its usage
examples as questions (bench/recall_quality.py, bench/runtime_search.py).

Data: Debian's `wordnet-base` package (WordNet 3.0 licence, Princeton
University); nothing of it is kept in this repository:

    apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb /tmp/wordnet
    # then pass --wordnet /tmp/wordnet/usr/share/wordnet
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Synset:
    words: tuple[str, ...]
    definition: str
    examples: tuple[str, ...]

    @property
    def text(self) -> str:
        return f"{', '.join(self.words)}: {self.definition}"


def read_wordnet(directory: Path) -> list[Synset]:
    """Every synset of data.{noun,verb,adj,adv} (WNDB format, wndb(5WN))."""
    synsets = []
    for part in ("noun", "verb", "adj", "adv"):
        for line in (directory / f"data.{part}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):  # the licence header
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            count = int(fields[3], 16)
            words = tuple(fields[4 + 2 * i].replace("_", " ").split("(")[0] for i in range(count))
            pieces = [p.strip() for p in gloss.split(";")]
            examples = tuple(p.strip('"').strip() for p in pieces if p.startswith('"'))
            definition = "; ".join(p for p in pieces if p and not p.startswith('"'))
            synsets.append(Synset(words, definition, tuple(e for e in examples if e)))
    return synsets
