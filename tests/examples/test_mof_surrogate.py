"""The MOF Generator's surrogate screen, Ray-free: the ridge model ranks linkers by a known relation, and a
screened batch sends the valid draws it predicts best while counting every draw."""

from __future__ import annotations

import numpy as np
import pytest

from examples.mof.agents import Generator
from examples.mof.linkers import SEED_LINKERS, canonical_linker, mutate
from examples.mof.surrogate import FEATURES, MIN_POINTS, UptakeSurrogate, features


def linkers(count: int, seed: int = 0) -> list[str]:
    """Valid, distinct mutants of the seed linkers."""
    rng = np.random.default_rng(seed)
    found: list[str] = []
    while len(found) < count:
        child = canonical_linker(mutate(str(rng.choice(SEED_LINKERS)), rng))
        if child is not None and child not in found:
            found.append(child)
    return found


def made_up_uptake(smiles: str) -> float:
    """A known relation for the test: shorter linkers with more substituents take up more."""
    row = features(smiles)
    assert row is not None
    named = dict(zip(FEATURES, row, strict=True))
    return float(np.exp(-0.3 * named["path_bonds"] + 0.25 * named["off_path_atoms"]))


def test_features_measure_the_linker_and_refuse_what_is_not_one() -> None:
    benzene, biphenyl = features("*c1ccc(*)cc1"), features("*c1ccc(-c2ccc(*)cc2)cc1")
    assert benzene is not None and biphenyl is not None
    assert biphenyl[FEATURES.index("path_bonds")] > benzene[FEATURES.index("path_bonds")]
    assert benzene[FEATURES.index("off_path_atoms")] == 2  # the two ring CH across the path
    assert features("not smiles((") is None and features("*c1ccccc1") is None


def test_the_surrogate_ranks_unseen_linkers_by_the_relation_it_was_fitted_on() -> None:
    pool = linkers(60)
    train, test = pool[:16], pool[16:]
    model = UptakeSurrogate(train, [made_up_uptake(s) for s in train])
    predicted = model.predict(test)
    truth = np.array([made_up_uptake(s) for s in test])
    ranks = np.argsort(np.argsort(predicted)), np.argsort(np.argsort(truth))
    assert np.corrcoef(*ranks)[0, 1] > 0.9  # Spearman
    best = model.pick([*test, "not a linker"], 5)
    assert best == sorted(best, key=lambda i: -predicted[i]) and len(test) not in best


def test_the_surrogate_needs_a_few_scored_linkers() -> None:
    few = linkers(MIN_POINTS - 1)
    with pytest.raises(ValueError, match="needs"):
        UptakeSurrogate(few, [1.0] * len(few))
    with pytest.raises(ValueError, match="uptakes"):
        UptakeSurrogate(linkers(5), [1.0])


def test_a_screened_batch_sends_the_valid_draws_predicted_best_and_counts_them_all() -> None:
    generator = Generator(None, None, seed=3, screen=3, learned_share=0.3)  # type: ignore[arg-type]
    unscreened = generator._propose(4, 0)  # no surrogate yet: as drawn, invalid ones included
    assert generator.draws
    assert sum(row["sent"] for row in generator.draws.values()) == len(unscreened) == 4
    generator.draws.clear()
    train = linkers(12, seed=1)
    generator.surrogate_data = {s: made_up_uptake(s) for s in train}
    generator._fit_surrogate()
    sent = generator._propose(4, 4)
    assert [c.id for c in sent] == ["L000004", "L000005", "L000006", "L000007"]
    assert all(canonical_linker(c.smiles) == c.smiles for c in sent)
    counts = {
        k: sum(row[k] for row in generator.draws.values()) for k in ("drawn", "valid", "sent")
    }
    assert counts["drawn"] == 12 and counts["sent"] == 4 and counts["valid"] >= 4
    model = generator._surrogate
    assert model is not None
    assert min(model.predict([c.smiles for c in sent])) > 0
