"""GSS: gradient scores by hand, and the scored buffer insertion (never a duplicate)."""

import jax
import jax.numpy as jnp
import numpy as np

from cljax import models
from cljax.core import buffer
from cljax.methods import gss
from tests.conftest import tiny_scenario

SC = tiny_scenario()
MODEL = models.MLP((6,), SC.num_classes)


def test_scores_are_the_largest_cosine_similarity_plus_one():
    method = gss.make(model=MODEL, input_fn=SC.input_fn)
    net = method.init(jax.random.key(0), SC.train(0)[0][:1]).net
    x, y = SC.train(0)
    prep = SC.input_fn(jnp.asarray(x), None, False)
    y = jnp.asarray(y)
    batch, stored = slice(0, 4), slice(10, 15)
    valid = jnp.array([True, True, True, False, True])
    got_batch, got_items = jax.jit(gss.scores)(
        net, prep[batch], y[batch], prep[stored], y[stored], valid, True
    )

    def grad(xs, ys):  # one gradient at a time, by hand
        def loss(p):
            logits = MODEL.apply({"params": p}, xs)
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(ys)), ys])

        return np.concatenate([np.ravel(a) for a in jax.tree.leaves(jax.grad(loss)(net.params))])

    G = [grad(prep[10 + j][None], y[10 + j][None]) for j in range(5) if valid[j]]
    cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))  # noqa: E731
    want = max(cos(grad(prep[batch], y[batch]), gj) for gj in G) + 1
    np.testing.assert_allclose(float(got_batch), want, rtol=1e-5)
    if want < 1:  # item scores are computed only then
        items = [max(cos(grad(prep[i][None], y[i][None]), gj) for gj in G) + 1 for i in range(4)]
        np.testing.assert_allclose(np.asarray(got_items), items, rtol=1e-5)
    else:
        np.testing.assert_array_equal(np.asarray(got_items), 0.0)


def test_scored_insertion_appends_then_replaces_only_low_scoring_batches_never_duplicating():
    cap = 6
    buf = buffer.init(cap, {"id": jnp.zeros((), jnp.int32)})
    scores = jnp.zeros(cap)
    add = jax.jit(buffer.add_scored)
    next_id = 0
    rng = np.random.default_rng(0)
    for step in range(40):
        ids = jnp.arange(next_id, next_id + 4, dtype=jnp.int32)
        next_id += 4
        batch_score = 0.5 if step % 2 else 1.5  # odd steps disagree with the memory
        item_scores = jnp.asarray(rng.uniform(0, 2, 4), jnp.float32)
        before = np.asarray(buf.data["id"]).copy()
        was_full = int(buf.num_seen) >= cap
        buf, scores = add(buf, scores, {"id": ids}, batch_score, item_scores, jax.random.key(step))
        stored = np.asarray(buf.data["id"])[: int(buf.size)]
        assert len(set(stored.tolist())) == len(stored)  # never a duplicate
        if was_full and batch_score >= 1:
            np.testing.assert_array_equal(np.asarray(buf.data["id"]), before)  # all dropped
        if int(buf.num_seen) <= cap:  # appended in order, with the batch's score
            n = int(buf.num_seen)
            assert stored[:n].tolist() == list(range(n))
            np.testing.assert_array_equal(np.asarray(scores)[n - 4 : n], batch_score)
    assert int(buf.num_seen) == next_id
    assert (np.asarray(buf.data["id"]) >= cap).any()  # replacements happened
    s = np.asarray(scores)
    assert ((s > 0) & (s <= 2)).all()


def test_the_batch_that_fills_the_memory_scores_its_overflow_items():
    """Items of a batch that find the memory full get their own scores (a score of 0
    would pin the item's slot forever: it could never be drawn for replacement)."""
    method = gss.make(model=MODEL, input_fn=SC.input_fn, buffer_size=2, gss_minibatch_size=2)
    x, y = SC.train(0)
    state = method.init(jax.random.key(0), x[:1])
    batch = {"x": jnp.asarray(x[:4]), "y": jnp.asarray(y[:4])}
    state, _ = jax.jit(method.train_step)(state, batch, jax.random.key(1))
    assert int(state.buffer.num_seen) == 4
    np.testing.assert_allclose(np.asarray(state.scores), gss.FIRST_SCORE)
