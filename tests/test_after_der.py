"""The methods after DER: each one's distinguishing mechanism checked by hand."""

import jax
import jax.numpy as jnp
import numpy as np

from cljax import methods, models
from cljax.methods.common import replay_batch
from tests.conftest import tiny_scenario

SC = tiny_scenario()


def batch(t, n=4, offset=0):
    x, y = SC.train(t)
    return {"x": jnp.asarray(x[offset : offset + n]), "y": jnp.asarray(y[offset : offset + n])}


def close(a, b, **kw):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw)


def test_cls_er_moves_each_ema_model_with_its_own_probability_and_decay():
    model = models.MLP((8,), SC.num_classes)
    method = methods.get("cls_er").make(
        model=model,
        input_fn=SC.input_fn,
        buffer_size=16,
        minibatch_size=4,
        plastic_model_update_freq=1.0,
        plastic_model_alpha=0.9,
        stable_model_update_freq=0.0,
    )
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    before = state.plastic.params
    state, _ = jax.jit(method.train_step)(state, batch(0), jax.random.key(1))
    assert int(state.step) == 1
    # first step: decay min(1 - 1/2, 0.9) = 0.5 towards the updated working model
    close(
        state.plastic.params,
        jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, before, state.net.params),
        rtol=1e-6,
    )
    close(state.stable.params, before)  # update probability 0: never moves
    for i in range(1, 12):
        old = state.plastic.params
        state, _ = jax.jit(method.train_step)(state, batch(0, offset=i % 3 * 4), jax.random.key(i))
        alpha = min(1 - 1 / (i + 2), 0.9)
        want = jax.tree.map(lambda e, p, a=alpha: a * e + (1 - a) * p, old, state.net.params)
        close(state.plastic.params, want, rtol=1e-5, atol=1e-7)


def test_cls_er_consistency_target_is_the_ema_model_surer_of_the_label():
    model = models.MLP((8,), SC.num_classes)
    reg = 2.0
    method = methods.get("cls_er").make(
        model=model, input_fn=SC.input_fn, buffer_size=16, minibatch_size=4, reg_weight=reg
    )
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    step = jax.jit(method.train_step)
    for i in range(3):
        state, _ = step(state, batch(0, offset=i * 4), jax.random.key(10 + i))
    # two EMA models far apart, so that each is the surer one on some replayed items
    b, key = batch(1), jax.random.key(42)
    _, k_buf, *_ = jax.random.split(key, 5)
    buf_x, items, valid = replay_batch(state, k_buf, 4, SC.input_fn)
    assert float(valid.sum()) == 4
    rows = np.arange(4)

    def logits(params, x):
        return model.apply({"params": params}, x)

    def label_prob(params):
        return np.asarray(jax.nn.softmax(logits(params, buf_x)))[rows, items["y"]]

    for seed in range(50):
        moved = {}
        for name, k in zip(
            ("stable", "plastic"), jax.random.split(jax.random.key(seed)), strict=True
        ):
            leaves, tree = jax.tree.flatten(getattr(state, name).params)
            noise = [
                jax.random.normal(kk, p.shape)
                for p, kk in zip(leaves, jax.random.split(k, len(leaves)), strict=True)
            ]
            moved[name] = jax.tree.unflatten(
                tree, [p + n for p, n in zip(leaves, noise, strict=True)]
            )
        p_s, p_p = label_prob(moved["stable"]), label_prob(moved["plastic"])
        if (p_s > p_p).any() and (p_s <= p_p).any():
            break
    else:
        raise AssertionError("no draw where each EMA model wins on some item")
    state = state.replace(
        stable=state.stable.replace(params=moved["stable"]),
        plastic=state.plastic.replace(params=moved["plastic"]),
    )
    z_s, z_p = logits(moved["stable"], buf_x), logits(moved["plastic"], buf_x)
    target = np.where((p_s > p_p)[:, None], z_s, z_p)
    out = np.asarray(logits(state.net.params, buf_x))
    x_all = jnp.concatenate([SC.input_fn(b["x"], None, True), buf_x])
    y_all = np.concatenate([b["y"], items["y"]])
    z_all = np.asarray(jax.nn.log_softmax(logits(state.net.params, x_all)))
    ce = -z_all[np.arange(len(y_all)), y_all].mean()
    want = ce + reg * np.mean((out - target) ** 2)
    _, metrics = step(state, b, key)
    np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-5)


def greedy_memory(labels, cap):
    """The paper's sampler in plain Python: the memory's class counts after `labels`."""
    counts, seen = {}, set()
    for y in labels:
        seen.add(y)
        if sum(counts.values()) < cap:
            counts[y] = counts.get(y, 0) + 1
        elif counts.get(y, 0) < cap / len(seen):
            largest = max(sorted(counts), key=lambda c: counts[c])
            counts[largest] -= 1
            counts[y] = counts.get(y, 0) + 1
    return [counts.get(c, 0) for c in range(SC.num_classes)]


def test_gdumb_memory_is_class_balanced_as_the_greedy_sampler():
    method = methods.get("gdumb").make(
        model=models.MLP((8,), SC.num_classes), input_fn=SC.input_fn, buffer_size=7
    )
    x = SC.train(0)[0]
    rng = np.random.default_rng(0)
    labels = np.concatenate([np.zeros(9, int), rng.integers(0, 2, 5), np.full(6, 2), [3, 3, 1]])
    state = method.init(jax.random.key(0), x[:1])
    step = jax.jit(method.train_step)
    for i in range(0, len(labels), 4):
        ys = jnp.asarray(labels[i : i + 4], jnp.int32)
        xs = jnp.asarray(x[: len(ys)])
        state, _ = step(state, {"x": xs, "y": ys}, jax.random.key(i))
    want = greedy_memory(labels.tolist(), 7)
    assert state.counts.tolist() == want
    stored = np.asarray(state.buffer.data["y"])
    assert np.bincount(stored, minlength=SC.num_classes).tolist() == want
    assert max(want) - min(want) <= 1  # four classes in seven slots


def test_gdumb_fit_schedule_is_torchs_warm_restarts_after_two_warm_up_epochs():
    torch = __import__("pytest").importorskip("torch")
    from cljax.methods.gdumb import fit_lr

    maxlr, minlr = 0.05, 5e-4
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=maxlr)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, 1, 2, eta_min=minlr)
    for epoch in range(40):  # as Mammoth's fit_buffer sets it
        if epoch == 0:
            opt.param_groups[0]["lr"] = maxlr * 0.1
        elif epoch == 1:
            opt.param_groups[0]["lr"] = maxlr
        else:
            sched.step()
        want = opt.param_groups[0]["lr"]
        np.testing.assert_allclose(float(fit_lr(epoch, maxlr, minlr)), want, rtol=1e-5)


def test_gdumb_cutmix_keeps_lam_of_the_image_and_pastes_from_the_batch():
    from cljax.methods.gdumb import cutmix

    x = jnp.arange(4, dtype=jnp.float32)[:, None, None] * jnp.ones((4, 6, 6))
    y = jnp.arange(4)
    for seed in range(20):
        mixed, y_perm, lam = cutmix(x, y, 3, jax.random.key(seed), 1.0, 1.0)
        pasted = np.asarray(mixed != x)
        for i in range(4):
            src = int(y_perm[i])
            if i == 3:  # padding stays itself
                assert src == 3 and not pasted[i].any()
                continue
            assert src < 3
            if src != i:  # the box holds item src's pixels, the rest item i's
                np.testing.assert_allclose(1 - pasted[i].mean(), float(lam), atol=1e-6)
                assert set(np.unique(np.asarray(mixed[i]))) <= {float(i), float(src)}


def test_gdumb_fits_a_fresh_network_on_the_memory_alone():
    model = models.MLP((8,), SC.num_classes)
    method = methods.get("gdumb").make(
        model=model, input_fn=SC.input_fn, buffer_size=16, fitting_epochs=2, fit_batch_size=4
    )
    from cljax.methods import TaskInfo

    x0 = SC.train(0)[0][:1]
    task = TaskInfo(0, SC.classes(0), num_tasks=SC.num_tasks)
    a = method.init(jax.random.key(0), x0)
    b = method.init(jax.random.key(1), x0)  # another network, the same memory
    for i in range(3):
        a, _ = method.train_step(a, batch(0, offset=4 * i), jax.random.key(i))
        b, _ = method.train_step(b, batch(0, offset=4 * i), jax.random.key(i))
    close(a.net.params, method.init(jax.random.key(0), x0).net.params)  # no learning on the stream
    fa = method.end_task(a, task, SC.train(0), jax.random.key(7))
    fb = method.end_task(b, task, SC.train(0), jax.random.key(7))
    close(fa.net.params, fb.net.params)
    mammoth = methods.get("gdumb").make(
        model=model, input_fn=SC.input_fn, buffer_size=16, fit_at="last"
    )
    assert mammoth.end_task(a, task, SC.train(0), jax.random.key(7)) is a  # not the last task


def log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def test_er_ace_masks_the_incoming_batch_to_its_classes_and_the_unseen_ones():
    from cljax.methods import TaskInfo

    method = methods.get("er_ace").make(
        model=models.MLP((8,), SC.num_classes),
        input_fn=SC.input_fn,
        buffer_size=16,
        minibatch_size=4,
    )
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    step = jax.jit(method.train_step)
    apply = state.net.apply_fn

    def by_hand(state, b, key, replay, mask=True):
        z = np.asarray(apply({"params": state.net.params}, SC.input_fn(b["x"], None, True)))
        y = np.asarray(b["y"])
        seen_max = max(int(state.seen_max), int(y.max()))
        keep = np.zeros(SC.num_classes, bool)
        keep[y] = True
        keep[seen_max:] = True
        if replay and mask:
            z = np.where(keep, z, -1e9)
        loss = -log_softmax(z)[np.arange(len(y)), y].mean()
        if replay:
            _, k_buf, _ = jax.random.split(key, 3)
            buf_x, items, valid = replay_batch(state, k_buf, 4, SC.input_fn)
            out = np.asarray(apply({"params": state.net.params}, buf_x))
            ce = -log_softmax(out)[np.arange(4), np.asarray(items["y"])]
            loss += (ce * np.asarray(valid)).sum() / max(float(valid.sum()), 1.0)
        return loss

    task0 = TaskInfo(0, SC.classes(0), num_tasks=SC.num_tasks)
    state = method.begin_task(state, task0, jax.random.key(1))
    for i in range(3):  # task 0: the plain CE, nothing replayed
        b, key = batch(0, offset=4 * i), jax.random.key(20 + i)
        want = by_hand(state, b, key, replay=False)
        state, m = step(state, b, key)
        np.testing.assert_allclose(float(m["loss"]), want, rtol=1e-5, atol=1e-6)
    task1 = TaskInfo.of(1, [SC.classes(t) for t in range(SC.num_tasks)])
    state = method.begin_task(state, task1, jax.random.key(2))
    x1, y1 = SC.train(1)
    c2, c3 = (np.flatnonzero(y1 == c) for c in SC.classes(1))
    mixed = np.concatenate([c2[:2], c3[:2]])
    # after a batch with both, a batch of the larger class alone masks the smaller one
    for i, idx in enumerate([mixed, c3[2:6], c2[2:6]]):
        b, key = {"x": jnp.asarray(x1[idx]), "y": jnp.asarray(y1[idx])}, jax.random.key(30 + i)
        want = by_hand(state, b, key, replay=True)
        if i == 0:  # the past classes' logits are out of the incoming batch's loss
            assert abs(by_hand(state, b, key, replay=True, mask=False) - want) > 1e-3
        state, m = step(state, b, key)
        np.testing.assert_allclose(float(m["loss"]), want, rtol=1e-5, atol=1e-6)
    assert int(state.seen_max) == max(SC.classes(1))


def test_er_ace_cosine_classifier_is_mammoths_custom_linear():
    torch = __import__("pytest").importorskip("torch")
    from cljax.models.heads import CosineHead

    head = CosineHead(models.MLP((8,), None), SC.num_classes)
    x = SC.input_fn(jnp.asarray(SC.train(0)[0][:5]), None, False)
    variables = head.init(jax.random.key(0), x)
    out = head.apply(variables, x)
    feats = models.MLP((8,), None).apply({"params": variables["params"]["body"]}, x)
    f, w = (torch.tensor(np.asarray(a)) for a in (feats, variables["params"]["weight"]))
    want = (
        10
        * (f / (f.norm(dim=1, keepdim=True) + 1e-5))
        @ (w / (w.norm(dim=1, keepdim=True) + 1e-5)).T
    )
    np.testing.assert_allclose(np.asarray(out), want.numpy(), rtol=1e-5, atol=1e-6)
    bound = 1 / np.sqrt(8)  # torch's nn.Linear init: U(+-1/sqrt(fan_in))
    assert np.abs(np.asarray(variables["params"]["weight"])).max() <= bound


def test_rpc_scores_through_the_fixed_simplex_and_keeps_a_balanced_memory():
    from cljax.methods import TaskInfo
    from cljax.models.heads import regular_simplex

    k = SC.num_classes
    simplex = regular_simplex(k)
    gram = simplex.T @ simplex
    np.testing.assert_allclose(np.diag(gram), 1.0, rtol=1e-6)
    np.testing.assert_allclose(gram[~np.eye(k, dtype=bool)], -1 / (k - 1), rtol=1e-5)
    np.testing.assert_allclose(simplex.sum(axis=1), 0.0, atol=1e-6)  # centred

    model = models.MLP((8,), k)
    method = methods.get("rpc").make(model=model, input_fn=SC.input_fn, buffer_size=7)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    x = SC.input_fn(jnp.asarray(SC.test(0)[0]), None, False)
    out = np.asarray(model.apply({"params": state.net.params}, x))
    np.testing.assert_allclose(
        np.asarray(method.predict(state, SC.test(0)[0])),
        out[:, :-1] @ simplex,
        rtol=1e-5,
        atol=1e-6,
    )
    b = batch(0)
    out_b = np.asarray(model.apply({"params": state.net.params}, SC.input_fn(b["x"], None, True)))
    z = out_b[:, :-1] @ simplex  # the loss is on the polytope's scores
    want = -log_softmax(z)[np.arange(4), np.asarray(b["y"])].mean()
    state, m = jax.jit(method.train_step)(state, b, jax.random.key(1))
    np.testing.assert_allclose(float(m["loss"]), want, rtol=1e-5)
    assert int(state.buffer.num_seen) == 0  # nothing stored during a task

    every = [SC.classes(t) for t in range(SC.num_tasks)]
    state = method.end_task(state, TaskInfo.of(0, every), SC.train(0), jax.random.key(2))
    y = np.asarray(state.buffer.data["y"])[: int(state.buffer.size)]
    assert sorted(np.bincount(y, minlength=k)[list(SC.classes(0))]) == [3, 4]  # 7 slots, 2 classes
    state = method.end_task(state, TaskInfo.of(1, every), SC.train(1), jax.random.key(3))
    y = np.asarray(state.buffer.data["y"])[: int(state.buffer.size)]
    counts = np.bincount(y, minlength=k)
    assert counts[list(SC.classes(0))].tolist() == [1, 1]  # 7 // 4 classes seen
    assert sorted(counts[list(SC.classes(1))]) == [2, 3]  # the 5 slots freed, shared
    x1, y1 = SC.train(1)
    for xi, yi in zip(np.asarray(state.buffer.data["x"])[2:7], y[2:7], strict=True):
        assert any((xi == xr).all() and yi == yr for xr, yr in zip(x1, y1, strict=True))


def normalized(a):
    a = np.asarray(a, np.float64)
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def test_lucir_imprints_new_rows_trains_only_them_and_takes_the_three_terms_by_hand():
    from cljax.methods import TaskInfo

    model = models.MLP((8,), SC.num_classes)
    method = methods.get("lucir").make(
        model=model,
        input_fn=SC.input_fn,
        buffer_size=8,
        fitting_epochs=2,
        fit_batch_size=4,
        lamda_base=2.0,
        k_mr=1,
        mr_margin=0.9,
    )
    every = [SC.classes(t) for t in range(SC.num_tasks)]
    t0, t1 = TaskInfo.of(0, every), TaskInfo.of(1, every)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    state = method.begin_task(state, t0, jax.random.key(1))
    step = jax.jit(method.train_step)
    for i in range(4):
        state, _ = step(state, batch(0, offset=(4 * i) % 20), jax.random.key(i))
    before = np.asarray(state.net.params["weight"])
    state = method.end_task(state, t0, SC.train(0), jax.random.key(5))
    after = np.asarray(state.net.params["weight"])
    old, new = list(SC.classes(0)), list(SC.classes(1))
    np.testing.assert_array_equal(after[new], before[new])  # fine-tuning: the task's rows
    assert not np.allclose(after[old], before[old])
    memory = state.memory
    assert sorted(np.asarray(memory.y)[np.asarray(memory.valid)].tolist()) == [0] * 4 + [1] * 4

    state = method.begin_task(state, t1, jax.random.key(6))
    state = method.begin_task_data(state, t1, SC.train(1), jax.random.key(7))
    x1, y1 = SC.train(1)
    body = models.MLP((8,), None)
    feats = body.apply({"params": state.net.params["body"]}, SC.input_fn(x1, None, True))
    w = np.asarray(state.net.params["weight"])
    scale = np.linalg.norm(w[old], axis=1).mean()
    for c in new:
        want = normalized(normalized(np.asarray(feats)[y1 == c]).mean(0)) * scale
        np.testing.assert_allclose(w[c], want, rtol=1e-5, atol=1e-6)

    # a step of task 1 on a batch mixing old and new classes, by hand (after two others,
    # so that the features have moved away from the teacher's)
    for i in range(2):
        state, _ = step(state, batch(1, offset=4 * i), jax.random.key(20 + i))
    w = np.asarray(state.net.params["weight"])
    x0, y0 = SC.train(0)
    b = {
        "x": jnp.asarray(np.concatenate([x0[:2], x1[:2]])),
        "y": jnp.asarray(np.concatenate([y0[:2], y1[:2]])),
    }
    p = state.net.params
    xin = SC.input_fn(b["x"], None, True)
    f = np.asarray(body.apply({"params": p["body"]}, xin))
    f_old = np.asarray(body.apply({"params": state.teacher["body"]}, xin))
    cos = normalized(f) @ normalized(np.asarray(p["weight"])).T
    y = np.asarray(b["y"])
    ce = -log_softmax(float(p["scale"]) * cos)[np.arange(4), y].mean()
    lam = 2.0 * np.sqrt(len(old) / len(new))  # the paper's lambda
    dis = lam * np.mean(1 - np.sum(normalized(f) * normalized(f_old), -1))
    assert dis > 1e-4
    hard = cos[:, min(new) :].max(axis=1)
    mr = np.mean(np.maximum(0, 0.9 - cos[np.arange(4), y] + hard)[:2])  # old-class items
    _, m = step(state, b, jax.random.key(8))
    np.testing.assert_allclose(float(m["loss"]), ce + dis + mr, rtol=1e-5)
    stepped, _ = step(state, b, jax.random.key(8))
    moved = np.abs(np.asarray(stepped.net.params["weight"]) - w).sum(axis=1)
    assert (moved[old] == 0).all() and (moved[new] > 0).all()  # past rows frozen


def test_bic_distils_holds_out_its_validation_set_and_corrects_only_the_new_classes():
    from cljax.methods import TaskInfo

    model = models.MLP((8,), SC.num_classes)
    method = methods.get("bic").make(
        model=model,
        input_fn=SC.input_fn,
        buffer_size=16,
        bic_epochs=5,
        bic_batch_size=4,
        valset_split=0.25,
    )
    every = [SC.classes(t) for t in range(SC.num_tasks)]
    step = jax.jit(method.train_step)
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    for t in range(2):
        info = TaskInfo.of(t, every)
        state = method.begin_task(state, info, jax.random.key(10 + t))
        state = method.begin_task_data(state, info, SC.train(t), jax.random.key(20 + t))
        x, y = SC.train(t)
        if t == 1:
            assert int(state.val.sum()) == 4 and int(state.held_valid.sum()) == 4  # 0.25 x 16
            _, _, pool_valid = method.train_pool(state, None)
            assert int(pool_valid.sum()) == 12  # the held-out exemplars are not replayed
            held = np.asarray(state.held_idx)[np.asarray(state.held_valid)]
            b = {"x": jnp.asarray(x[held]), "y": jnp.asarray(y[held])}
            same, m = step(state, b, jax.random.key(3))  # only held-out items: no step
            assert float(m["loss"]) == 0.0
            close(same.net.params, state.net.params)
            # a batch of two kept items and two old-class exemplars, by hand
            keep = np.setdiff1d(np.arange(len(y)), held)[:2]
            mem_x, mem_y = (np.asarray(a) for a in (state.memory.data["x"], state.memory.data["y"]))
            xb = np.concatenate([x[keep], mem_x[:2]])
            yb = np.concatenate([y[keep], mem_y[:2]])
            xin = SC.input_fn(jnp.asarray(xb), None, True)
            z = np.asarray(model.apply({"params": state.net.params}, xin), np.float64)
            z_old = np.asarray(model.apply({"params": state.teacher}, xin), np.float64)
            ce = -log_softmax(z)[np.arange(4), yb].mean()  # every class seen by now
            past = list(SC.classes(0))
            p_old = np.exp(log_softmax(z_old[:, past] / 2))
            kd = -(p_old * log_softmax(z[:, past] / 2)).sum(1).mean()
            _, m = step(state, {"x": jnp.asarray(xb), "y": jnp.asarray(yb)}, jax.random.key(4))
            np.testing.assert_allclose(float(m["loss"]), 0.5 * ce + 0.5 * 4 * kd, rtol=1e-5)
        for i in range(4):
            state, _ = step(state, batch(t, offset=4 * i), jax.random.key(i))
        state = method.end_task(state, info, SC.train(t), jax.random.key(30 + t))
        assert bool(state.has_corr) == (t == 1)
    beta, alpha = (float(v) for v in state.corr)
    assert (beta, alpha) != (0.0, 1.0)
    xs = SC.test(0)[0]
    z = np.asarray(
        model.apply({"params": state.net.params}, SC.input_fn(jnp.asarray(xs), None, False))
    )
    new = list(SC.classes(1))
    want = z.copy()
    want[:, new] = alpha * z[:, new] + beta
    np.testing.assert_allclose(np.asarray(method.predict(state, xs)), want, rtol=1e-5, atol=1e-6)


def test_lucir_keeps_finite_gradients_and_runs_with_momentum_under_a_schedule():
    from cljax import train
    from cljax.methods.lucir import cosine

    x = jnp.ones((3, 5))
    grads = jax.grad(lambda a: cosine(a, x).sum())(jnp.zeros((3, 5)))  # all-zero features
    assert np.isfinite(np.asarray(grads)).all()
    method = methods.get("lucir").make(
        model=models.MLP((8,), SC.num_classes),
        input_fn=SC.input_fn,
        buffer_size=16,
        fitting_epochs=1,
        fit_batch_size=4,
        optim_mom=0.9,
    )
    config = train.RunConfig(epochs=2, batch_size=4, seeds=(0,), lr_milestones=(1,), progress=False)
    res = train.run(method, SC, config)
    assert np.isfinite(res["final_train_loss"]).all()


def test_bic_memory_smaller_than_its_capacity_holds_out_and_stores_each_item_once():
    from cljax.methods import TaskInfo

    method = methods.get("bic").make(
        model=models.MLP((8,), SC.num_classes),
        input_fn=SC.input_fn,
        buffer_size=32,
        valset_split=0.5,
        bic_epochs=1,
        bic_batch_size=4,
    )
    every = [SC.classes(t) for t in range(SC.num_tasks)]
    state = method.init(jax.random.key(0), SC.train(0)[0][:1])
    t0, t1 = TaskInfo.of(0, every), TaskInfo.of(1, every)
    state = method.begin_task(state, t0, jax.random.key(1))
    state = method.end_task(state, t0, SC.train(0), jax.random.key(2))
    n = len(SC.train(0)[1])  # 24 items for 32 slots: each stored once
    assert int(state.memory.size) == n
    stored = np.asarray(state.memory.data["x"])[:n].reshape(n, -1)
    assert len({row.tobytes() for row in stored}) == n
    state = method.begin_task(state, t1, jax.random.key(3))
    state = method.begin_task_data(state, t1, SC.train(1), jax.random.key(4))
    val = np.asarray(state.val)
    assert val.sum() == n // 2 and not val[n:].any()  # half the stored items, none empty
    assert int(state.held_valid.sum()) == n // 2
