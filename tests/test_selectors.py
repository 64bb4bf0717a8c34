import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compression_helps.engine import metrics
from compression_helps.selection import selectors

NUM_CLASSES = 12


@st.composite
def rank_matrices(draw):
    n = draw(st.integers(1, 20))
    v = draw(st.integers(1, 11))
    ranks = draw(hnp.arrays(np.int32, (n, v), elements=st.integers(1, 8)))
    # Few distinct sizes, so that size ties happen too.
    sizes = draw(hnp.arrays(np.int64, (n, v), elements=st.integers(1, 5)))
    return ranks, sizes


@st.composite
def topk_arrays(draw):
    n = draw(st.integers(1, 20))
    v = draw(st.integers(1, 11))
    rows = draw(
        hnp.arrays(
            np.int64,
            (n * v,),
            elements=st.integers(0, 2**31 - 1),
        )
    )
    rng = np.random.default_rng(int(rows.sum()) % 2**32)
    # Each candidate's top-5: 5 distinct classes out of a few, in some order.
    topk = np.stack([rng.permutation(7)[:5] for _ in range(n * v)]).reshape(
        n, v, 5
    )
    sizes = rng.integers(1, 6, (n, v))
    probs = -np.sort(-rng.random((n, v, 5)), axis=-1)
    labels = rng.integers(0, 7, n)
    return topk, sizes, probs, labels


def ranks_from_topk(topk, labels):
    """A rank matrix consistent with topk (rank 6 when not in the top 5)."""
    hit = topk == labels[:, None, None]
    return np.where(hit.any(-1), hit.argmax(-1) + 1, 6)


def all_selections(ranks, sizes, topk, probs):
    n = len(ranks)
    chosen = {
        f"fixed_{j}": selectors.fixed(j, n) for j in range(ranks.shape[1])
    }
    chosen["keep_top1"] = selectors.keep_top1(topk, sizes)
    chosen["keep_top5"] = selectors.keep_top5(topk, sizes)
    chosen["keep_both"] = selectors.keep_top1_and_top5(topk, sizes)
    chosen["confident"] = selectors.confident(topk, probs, sizes, 0.5)
    chosen["random"] = np.random.default_rng(0).integers(0, ranks.shape[1], n)
    return chosen


@settings(max_examples=200, deadline=None)
@given(rank_matrices())
def test_hrs_picks_min_rank_then_smallest_size(data):
    ranks, sizes = data
    chosen = selectors.highest_rank(ranks, sizes)
    for i in range(len(ranks)):
        best = ranks[i].min()
        assert ranks[i, chosen[i]] == best
        assert sizes[i, chosen[i]] == sizes[i][ranks[i] == best].min()


@settings(max_examples=100, deadline=None)
@given(topk_arrays())
def test_hrs_topk_accuracy_is_never_beaten(data):
    topk, sizes, probs, labels = data
    ranks = ranks_from_topk(topk, labels)
    hrs = selectors.highest_rank(ranks, sizes)
    for name, chosen in all_selections(ranks, sizes, topk, probs).items():
        for k in (1, 2, 5, 6):
            assert metrics.topk_accuracy(
                ranks, hrs, k
            ) >= metrics.topk_accuracy(ranks, chosen, k), (name, k)


@settings(max_examples=200, deadline=None)
@given(topk_arrays())
def test_label_free_selectors_keep_accuracy_exactly(data):
    topk, sizes, probs, labels = data
    ranks = ranks_from_topk(topk, labels)
    original = selectors.fixed(0, len(ranks))
    kept = {
        "keep_top1": (1,),
        "keep_top5": (5,),
        "keep_both": (1, 5),
    }
    selections = all_selections(ranks, sizes, topk, probs)
    for name, ks in kept.items():
        for k in ks:
            assert metrics.topk_accuracy(
                ranks, selections[name], k
            ) == metrics.topk_accuracy(ranks, original, k), (name, k)


@settings(max_examples=200, deadline=None)
@given(topk_arrays())
def test_label_free_selectors_pick_smallest_qualifying(data):
    topk, sizes, probs, _ = data
    chosen = selectors.keep_top1(topk, sizes)
    for i in range(len(topk)):
        same = topk[i, :, 0] == topk[i, 0, 0]
        assert same[chosen[i]]
        assert sizes[i, chosen[i]] == sizes[i][same].min()
    chosen = selectors.keep_top5(topk, sizes)
    for i in range(len(topk)):
        same = np.array(
            [set(topk[i, j]) == set(topk[i, 0]) for j in range(topk.shape[1])]
        )
        assert same[chosen[i]]
        assert sizes[i, chosen[i]] == sizes[i][same].min()


def test_confident_falls_back_to_original():
    topk = np.array([[[3, 1, 2, 4, 5], [3, 1, 2, 4, 5], [7, 1, 2, 4, 5]]])
    probs = np.array([[[0.4] + [0.1] * 4, [0.6] + [0.1] * 4, [0.99] * 5]])
    sizes = np.array([[100, 50, 10]])
    assert selectors.confident(topk, probs, sizes, 0.5).tolist() == [1]
    # Candidate 1 is not confident enough, candidate 2 disagrees.
    assert selectors.confident(topk, probs, sizes, 0.7).tolist() == [0]


def test_fixed():
    np.testing.assert_array_equal(selectors.fixed(3, 4), [3, 3, 3, 3])
