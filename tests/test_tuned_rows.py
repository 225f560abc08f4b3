"""The tuned rows the DER paper's code lists (Mammoth 5dc82be utils/best_args.py) and the
X-DER protocol's Seq-CIFAR-100 rows (its tpami2023 tag), issue 46 item 4."""

import pytest

from cljax import tuned

# best_args at 5dc82be: every DER-table method but MER on Seq-CIFAR-10; on Seq-TinyImg
# every one but MER, GEM, GSS and HAL
CIFAR10 = "sgd ewc_on si lwf pnn er gem agem agem_r icarl fdr gss hal der derpp".split()
TINYIMG = "sgd ewc_on si lwf pnn er agem agem_r icarl fdr der derpp".split()
XDER = "sgd er der derpp icarl lwf".split()


@pytest.mark.parametrize("method", CIFAR10)
def test_seq_cifar10_rows_come_from_the_papers_code(method):
    for size in (None,) if method in ("sgd", "ewc_on", "si", "lwf", "pnn") else (200, 500, 5120):
        found = tuned.lookup(method, "seq-cifar10", size)
        assert found is not None and found.buffer_size == size
        assert "best_args" in found.source, found.source


@pytest.mark.parametrize("method", TINYIMG)
def test_seq_tinyimg_rows_come_from_the_papers_code(method):
    size = None if method in ("sgd", "ewc_on", "si", "lwf", "pnn") else 500
    found = tuned.lookup(method, "seq-tinyimg", size)
    assert found is not None and "best_args" in found.source
    assert found.values["n_epochs"] == 100  # Seq-TinyImageNet's epochs in the DER paper


@pytest.mark.parametrize("method", XDER)
def test_seq_cifar100_rows_are_the_x_der_protocols(method):
    size = None if method in ("sgd", "lwf") else 2000
    found = tuned.lookup(method, "seq-cifar100", size)
    assert found is not None and "tpami2023" in found.source


def test_agem_r_has_its_mnist_rows():
    # untuned, it ran at the default batch of 32; best_args: 10 on Seq-MNIST, 128 on Perm/Rot
    batches = {"seq-mnist": 10, "perm-mnist": 128, "rot-mnist": 128}
    for benchmark, batch in batches.items():
        settings = tuned.resolve("agem_r", benchmark, 500)
        assert settings.tuned is not None, benchmark
        assert settings.run.batch_size == batch
        assert settings.config.minibatch_size == 128
    assert tuned.resolve("agem_r", "rot-mnist", 500).config.lr == 0.3


def test_gss_keeps_best_args_one_epoch_at_5120():
    assert tuned.resolve("gss", "seq-cifar10", 5120).run.n_epochs == 1
    assert tuned.resolve("gss", "seq-cifar10", 500).run.n_epochs == 50


def test_every_resnet_row_of_the_der_table_runs_tuned():
    # `reproduce_der --benchmarks seq-cifar10 seq-tinyimg`: each row at its paper's buffers
    from experiments import reproduce_der

    for benchmark in reproduce_der.CONV:
        for method, cells in reproduce_der.PAPER[benchmark].items():
            for size in cells:
                found = tuned.lookup(method, benchmark, size)
                assert found is not None and found.buffer_size == size, (benchmark, method, size)
