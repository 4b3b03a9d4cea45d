"""The promotion rule: heading accuracy margin and the per-chapter veto."""

import uuid

from db.models import ModelVersion
from hscode.context import open_context
from training.promotion import PromotionPolicy, compare, decide

POLICY = PromotionPolicy(margin=0.005, chapter_tolerance=0.02, min_chapter_rows=50)


def _metrics(heading: float, chapters: dict[str, tuple[int, float]] | None = None):
    return {
        "heading_accuracy": heading,
        "chapters": {
            chapter: {"count": count, "heading_accuracy": accuracy}
            for chapter, (count, accuracy) in (chapters or {}).items()
        },
    }


def test_compare_promotes_clear_gain():
    promoted, _ = compare(_metrics(0.71), _metrics(0.70), POLICY)
    assert promoted


def test_compare_rejects_gain_below_margin():
    promoted, reason = compare(_metrics(0.703), _metrics(0.70), POLICY)
    assert not promoted
    assert "below the margin" in reason


def test_compare_rejects_equal_accuracy():
    promoted, _ = compare(_metrics(0.70), _metrics(0.70), POLICY)
    assert not promoted


def test_compare_vetoes_chapter_loss():
    candidate = _metrics(0.75, {"84": (100, 0.60), "85": (100, 0.90)})
    champion = _metrics(0.70, {"84": (100, 0.65), "85": (100, 0.75)})
    promoted, reason = compare(candidate, champion, POLICY)
    assert not promoted
    assert "chapter 84" in reason


def test_compare_ignores_small_chapter():
    candidate = _metrics(0.75, {"90": (49, 0.10)})
    champion = _metrics(0.70, {"90": (49, 0.90)})
    promoted, _ = compare(candidate, champion, POLICY)
    assert promoted


def test_compare_allows_loss_within_tolerance():
    candidate = _metrics(0.75, {"84": (100, 0.64)})
    champion = _metrics(0.70, {"84": (100, 0.65)})
    promoted, _ = compare(candidate, champion, POLICY)
    assert promoted


def _version(session, status: str = "candidate") -> ModelVersion:
    version = ModelVersion(
        fusion="text", text_encoder="minilm", image_encoder=None, label_space={},
        hs_edition="HS2022", settings={}, weights_key=f"models/{uuid.uuid4().hex}.tar",
        data_fingerprint="0" * 64, evaluation_set="t", metrics={}, status=status,
    )
    session.add(version)
    session.flush()
    return version


def test_decide_rejects_when_the_champion_changed_during_evaluation(embedded_env):
    ctx = open_context()
    with ctx.sessions() as session, session.begin():
        evaluated = _version(session, "retired")
        _version(session, "champion")
        candidate = _version(session)
        decision = decide(session, candidate, _metrics(0.9), _metrics(0.5), POLICY,
                          "test", evaluated_champion_id=evaluated.id)
        assert (decision.action, candidate.status) == ("reject", "candidate")


def test_decide_without_champion_metrics_rejects_instead_of_failing(embedded_env):
    ctx = open_context()
    with ctx.sessions() as session, session.begin():
        champion = _version(session, "champion")
        candidate = _version(session)
        decision = decide(session, candidate, _metrics(0.9), None, POLICY, "test",
                          evaluated_champion_id=champion.id)
        assert decision.action == "reject"
