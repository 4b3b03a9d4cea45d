"""Evidence: the decided cases whose text embeddings lie nearest a declaration's."""

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

EVIDENCE_WEIGHTS_FILE = "evidence.safetensors"
EVIDENCE_CASES_FILE = "evidence.json"
EVIDENCE_COUNT = 3
DISTINCT_POOL = 10
"""Nearest cases searched per evidence case when subheadings must differ."""
# NOTE: on the held-out split of chapters 84, 85 and 90, a case of the right
# subheading is among the three for 72% of declarations (the default model),
# short of the 80% aimed at. The subheading is in the index for 98%, and the
# model's own top-3 subheadings hold it for 73%, so the model's accuracy,
# not the search, sets this limit.
SEARCH_BLOCK_ROWS = 32768
"""Index rows compared at once, so a float32 block stays near 50 MB at 384 dims."""


@dataclass(frozen=True)
class EvidenceCase:
    """A labelled declaration that can be shown as evidence."""

    declaration_id: int
    reference: str
    description: str
    hs_code: str


class EvidenceIndex:
    """L2-normalised text embeddings [N, D] in float16 with their cases.

    Cosine similarity of normalised vectors is their dot product.
    """

    def __init__(self, embeddings: torch.Tensor, cases: Sequence[EvidenceCase]) -> None:
        if embeddings.shape[0] != len(cases):
            raise ValueError(
                f"evidence has {embeddings.shape[0]} embeddings but {len(cases)} "
                "cases; rebuild the checkpoint's evidence files"
            )
        self.embeddings = embeddings.to(torch.float16)  # [N, D]
        self.cases = list(cases)
        self._position = {c.declaration_id: i for i, c in enumerate(self.cases)}

    def __len__(self) -> int:
        return len(self.cases)

    def save(self, folder: Path) -> list[Path]:
        """Write the embeddings and the cases into a checkpoint folder."""
        weights = folder / EVIDENCE_WEIGHTS_FILE
        save_file({"embeddings": self.embeddings.contiguous().cpu()}, weights)
        cases = folder / EVIDENCE_CASES_FILE
        cases.write_text(
            json.dumps(
                {
                    "declaration_ids": [c.declaration_id for c in self.cases],
                    "references": [c.reference for c in self.cases],
                    "descriptions": [c.description for c in self.cases],
                    "hs_codes": [c.hs_code for c in self.cases],
                },
                ensure_ascii=False,
            )
        )
        return [weights, cases]

    @classmethod
    def load(cls, folder: Path) -> "EvidenceIndex | None":
        """Read a checkpoint folder's evidence; None when it was saved without."""
        weights = folder / EVIDENCE_WEIGHTS_FILE
        cases_file = folder / EVIDENCE_CASES_FILE
        if not weights.is_file() or not cases_file.is_file():
            return None
        data = json.loads(cases_file.read_text())
        cases = [
            EvidenceCase(*row)
            for row in zip(
                data["declaration_ids"],
                data["references"],
                data["descriptions"],
                data["hs_codes"],
            )
        ]
        return cls(load_file(weights)["embeddings"], cases)

    def nearest(
        self,
        queries: torch.Tensor,
        exclude_ids: Sequence[int | Collection[int] | None] | None = None,
        k: int = EVIDENCE_COUNT,
        *,
        distinct: bool = True,
    ) -> list[list[tuple[EvidenceCase, float]]]:
        """Return the k most similar cases per query row, best first.

        `queries` is [B, D], normalised or not. The declarations named in
        `exclude_ids[row]` (one id or several) are never that row's evidence,
        so a declaration is never its own evidence. With `distinct`, each
        case is the most similar one of a subheading not shown yet, among
        the `DISTINCT_POOL` times k nearest. When the pool contains fewer
        than k subheadings, cases of a repeated subheading fill the rest.
        """
        if len(self) == 0 or queries.shape[0] == 0:
            return [[] for _ in range(queries.shape[0])]
        queries = normalize(queries.float().cpu())  # [B, D]
        excluded = self._excluded_positions(exclude_ids, queries.shape[0])
        pool = k * DISTINCT_POOL if distinct else k
        scores, positions = self._search(queries, excluded, min(pool, len(self)))
        found = []
        for row_scores, row_positions in zip(scores.tolist(), positions.tolist()):
            ranked = [
                (self.cases[p], round(s, 4))
                for s, p in zip(row_scores, row_positions)
                if s > -2.0
            ]
            found.append(_first_per_subheading(ranked, k) if distinct else ranked[:k])
        return found

    def _excluded_positions(self, exclude_ids, rows: int) -> list[list[int]]:
        if exclude_ids is None:
            return [[] for _ in range(rows)]
        positions = []
        for excluded in exclude_ids:
            ids = (
                []
                if excluded is None
                else ([excluded] if isinstance(excluded, int) else excluded)
            )
            positions.append([self._position[i] for i in ids if i in self._position])
        return positions

    def _search(self, queries, excluded, k):
        """Block-wise top-k over the index: scores and positions [B, k]."""
        best_scores = torch.full((queries.shape[0], 0), -3.0)
        best_positions = torch.zeros((queries.shape[0], 0), dtype=torch.long)
        for start in range(0, len(self), SEARCH_BLOCK_ROWS):
            block = self.embeddings[start : start + SEARCH_BLOCK_ROWS].float()
            scores = queries @ block.T  # [B, b]
            for row, positions in enumerate(excluded):
                for position in positions:
                    if start <= position < start + len(block):
                        # Cosines lie in [-1, 1], so -3 ranks below every case.
                        scores[row, position - start] = -3.0
            top_scores, top_index = scores.topk(min(k, scores.shape[1]), dim=1)
            best_scores = torch.cat([best_scores, top_scores], dim=1)
            best_positions = torch.cat([best_positions, top_index + start], dim=1)
            best_scores, order = best_scores.topk(min(k, best_scores.shape[1]), dim=1)
            best_positions = best_positions.gather(1, order)
        return best_scores, best_positions


def _first_per_subheading(
    ranked: list[tuple[EvidenceCase, float]], k: int
) -> list[tuple[EvidenceCase, float]]:
    """Keep the best case of each subheading, then the next best, k in all."""
    seen, first, rest = set(), [], []
    for match in ranked:
        subheading = match[0].hs_code[:6]
        (rest if subheading in seen else first).append(match)
        seen.add(subheading)
    chosen = (first + rest)[:k]
    return sorted(chosen, key=lambda match: -match[1])


def normalize(embeddings: torch.Tensor) -> torch.Tensor:
    """Scale each row [B, D] to unit L2 norm."""
    return F.normalize(embeddings, p=2.0, dim=-1)


def evidence_json(
    matches: list[tuple[EvidenceCase, float]],
    names: dict[str, tuple[str | None, str | None]],
    heading: str,
    subheading: str,
) -> dict:
    """Return the `evidence` JSON of one prediction: cases and code names."""
    return {
        "cases": [
            {
                "declaration_id": case.declaration_id,
                "reference": case.reference,
                "description": case.description,
                "hs_code": case.hs_code,
                "similarity": similarity,
            }
            for case, similarity in matches
        ],
        "heading": _named(heading, names),
        "subheading": _named(subheading, names),
    }


def _named(code: str, names: dict[str, tuple[str | None, str | None]]) -> dict:
    english, korean = names.get(code, (None, None))
    return {"code": code, "name_en": english, "name_ko": korean}


def subheading_hit_rate(
    matches: list[list[tuple[EvidenceCase, float]]], codes: Sequence[str]
) -> float:
    """Share of rows with at least one evidence case of the row's subheading."""
    if not codes:
        raise ValueError("cannot compute an evidence hit rate on zero rows")
    hits = sum(
        any(case.hs_code[:6] == code[:6] for case, _ in row)
        for row, code in zip(matches, codes)
    )
    return hits / len(codes)


def evidence_for_rows(
    index: EvidenceIndex | None,
    text_embeddings: torch.Tensor | None,
    declaration_ids: Sequence[int],
    predictions: Sequence,
    names: dict[str, tuple[str | None, str | None]],
) -> list[dict | None]:
    """Return each scored row's `evidence` JSON, None without an index."""
    if index is None or text_embeddings is None:
        return [None] * len(declaration_ids)
    matches = index.nearest(text_embeddings, declaration_ids)
    return [
        evidence_json(found, names, p.heading, p.subheading)
        for found, p in zip(matches, predictions)
    ]
