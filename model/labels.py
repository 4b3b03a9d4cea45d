"""The label space: subheadings seen in training and the headings above them."""

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LabelSpace:
    """Sorted subheadings (6 digits) and headings (4 digits), with their names.

    `names` maps a code to its English and Korean names; a code missing from
    the nomenclature keeps its digits as its name.
    """

    subheadings: tuple[str, ...]
    headings: tuple[str, ...]
    edition: str
    names: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Lookup tables derived from the codes, so they are never stored.
        heading_of = {h: i for i, h in enumerate(self.headings)}
        object.__setattr__(self, "_heading_index", heading_of)
        object.__setattr__(
            self, "_subheading_index", {s: i for i, s in enumerate(self.subheadings)}
        )
        object.__setattr__(
            self, "_parents", [heading_of[s[:4]] for s in self.subheadings]
        )

    @classmethod
    def from_codes(
        cls,
        codes: Iterable[str],
        edition: str,
        names: dict[str, tuple[str | None, str | None]] | None = None,
    ) -> "LabelSpace":
        """Build the space of the subheadings and headings of decided codes."""
        subheadings = sorted({code[:6] for code in codes})
        headings = sorted({code[:4] for code in subheadings})
        names = names or {}
        kept = {c: names[c] for c in headings + subheadings if c in names}
        return cls(tuple(subheadings), tuple(headings), edition, kept)

    @property
    def parent_index(self) -> torch.Tensor:
        """Heading index of every subheading, shape [S]."""
        return torch.tensor(self._parents, dtype=torch.long)

    def subheading_index(self, code: str) -> int | None:
        """Return the index of a code's subheading, or None if never seen."""
        return self._subheading_index.get(code[:6])

    def heading_index(self, code: str) -> int | None:
        """Return the index of a code's heading, or None if never seen."""
        return self._heading_index.get(code[:4])

    def name(self, code: str) -> str:
        """Return the English name of a code, else the Korean one, else its digits."""
        english, korean = self.names.get(code, (None, None))
        return english or korean or code

    def to_dict(self) -> dict:
        return {
            "subheadings": list(self.subheadings),
            "headings": list(self.headings),
            "edition": self.edition,
            "names": {code: list(pair) for code, pair in self.names.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "LabelSpace":
        names = {code: (pair[0], pair[1]) for code, pair in data["names"].items()}
        return cls(
            tuple(data["subheadings"]), tuple(data["headings"]), data["edition"], names
        )
