"""One trial's claim on its (candidate, rung): a twin finishing while the claim is decided (behind the four-worker
flake: two workers trained one candidate). The end-to-end multi-worker runs are in test_workers.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.mark.parametrize("promotion", [False, True])
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_twin_completing_while_a_claim_is_decided_is_copied_not_evaluated_again(
    tmp_path, monkeypatch, request, backend, promotion
):
    import optuna

    from hwtune.tuner import halving, objective
    from hwtune.tuner.halving import CLAIM_KEY, Coordination, claim_or_twin
    from hwtune.tuner.storage import FIG_KEY, fresh_trials, open_storage

    # PostgreSQL: a fresh database on HWTUNE_TEST_POSTGRES_URL's server (skipped without one, see .ci/run)
    url = f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    study = optuna.create_study(storage=open_storage(url, heartbeat=False), study_name="c", directions=["maximize"])
    rung = 1 if promotion else 0
    a, b = study.ask(), study.ask()
    assert claim_or_twin(study, a, "k1", rung) is None  # another worker evaluates k1 at this rung
    a.set_user_attr(FIG_KEY, {"candidate_key": "k1", "rung": rung, "trained": True})

    # The other worker's trial completes (it needs no lock for that) right after this claim's first read of
    # the study: the window in which the claim used to read once for results and again for running twins.
    reads = []

    def read_then_twin_completes(st, states=None):
        out = fresh_trials(st, states)
        if not reads:
            study.tell(a, 0.5)
        reads.append(states)
        return out

    monkeypatch.setattr(objective, "fresh_trials", read_then_twin_completes)
    monkeypatch.setattr(halving, "fresh_trials", read_then_twin_completes)
    logged: list[str] = []
    ctx = SimpleNamespace(log=logged.append)
    trial = objective.CandidateTrial(ctx, study, b, store=None, coord=Coordination(url, "c"))  # type: ignore[arg-type]
    prior = trial._claim("k1", rung, promotion)
    assert prior is not None and prior.number == a.number and list(prior.values) == [0.5]
    assert CLAIM_KEY not in study.trials[b.number].user_attrs  # b never claimed k1: nothing trained twice
    assert logged == [f"trial {b.number}: its candidate is being evaluated by trial {a.number}; waiting"]
