"""visualbert.cpu: accelerate/restore, the CPU layers and kernels against Paddle's stock ones, the
oneDNN binding (missing library, primitive-cache eviction, threads)."""
import ctypes
import gc
import json
import os
import platform
import subprocess
import sys
import threading

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from helpers import ALL_HEADS, HF, RUNNERS, check, make, numpy_batch, tensors

from visualbert import cpu, pretrained
from visualbert import modeling as vm
from visualbert.cpu import kernels, layers, onednn

# The kernels at every size, so the tiny models here go through them (see conftest).
pytestmark = pytest.mark.usefixtures("all_cpu_routes")


@pytest.fixture
def accelerated():
    """accelerate(model) for the test; every model it was given is restored afterwards."""
    models = []

    def swap(model):
        models.append(model)
        return cpu.accelerate(model)

    yield swap
    for model in models:
        cpu.restore(model)


@pytest.fixture
def cpu_process(accelerated):
    """The process settings and the oneDNN binding that accelerate() makes, for kernel tests."""
    accelerated(paddle.nn.Layer())


def stride_kernel():
    return paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"]


def openmp_blocktime():
    if "KMP_BLOCKTIME" in os.environ or not os.path.exists(cpu.OPENMP_LIBRARY):
        return None
    return ctypes.CDLL(cpu.OPENMP_LIBRARY).kmp_get_blocktime()


# ---------------------------------------------------------------------------- accelerate / restore


def test_accelerate_swaps_sublayers_in_place_and_restore_swaps_them_back(accelerated):
    model = make(vm.VisualBertForPreTraining, tie_word_embeddings=False)
    before = {name: id(p) for name, p in model.named_parameters()}
    keys = list(model.state_dict())
    stock_types = {name: type(layer) for name, layer in model.named_sublayers()}
    accelerated(model)
    layer = model.visual_bert.encoder.layer[0]
    assert type(layer.attention.self) is layers.SelfAttention
    assert type(layer.attention.self.query) is layers.Linear
    assert type(layer.output.LayerNorm) is layers.LayerNorm and type(layer.output.dropout) is layers.Dropout
    assert layer.intermediate.act is kernels.gelu and model.cls.predictions.transform.act is kernels.gelu
    assert type(model.cls.predictions.decoder) is layers.Linear
    # The same parameter objects under the same names: nothing copied, checkpoints unchanged.
    assert {name: id(p) for name, p in model.named_parameters()} == before
    assert list(model.state_dict()) == keys
    cpu.restore(model)
    assert {name: type(layer) for name, layer in model.named_sublayers()} == stock_types
    assert layer.intermediate.act is F.gelu


@pytest.mark.parametrize("with_onednn", [True, False])
@pytest.mark.parametrize("cls", ALL_HEADS)
def test_accelerated_model_gives_the_stock_outputs(cls, with_onednn, accelerated, monkeypatch):
    if not with_onednn:  # a platform where Paddle ships no oneDNN: numpy softmax, Paddle's GELU and LayerNorm
        monkeypatch.setattr(onednn, "load", lambda *args: None)
    model = make(cls)
    batch = tensors(numpy_batch())
    if cls is vm.VisualBertForMultipleChoice:
        batch = {k: v.unsqueeze(1) for k, v in batch.items()}
    if cls is vm.VisualBertForRegionToPhraseAlignment:
        batch["region_to_phrase_position"] = paddle.to_tensor([[1, 2], [3, -1]])
    every = {} if cls is vm.VisualBertForRegionToPhraseAlignment else {"output_attentions": True,
                                                                       "output_hidden_states": True}
    stock = [model(**batch, return_dict=False), model(**batch, **every, return_dict=False)]
    accelerated(model)
    fast = [model(**batch, return_dict=False), model(**batch, **every, return_dict=False)]
    flat = [paddle.utils.flatten(outputs) for outputs in (stock, fast)]
    assert len(flat[0]) == len(flat[1])
    for want, got in zip(*flat):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def train_step_gradients(model, batch, targets):
    model.clear_gradients()
    model(**batch, labels=targets).loss.backward()
    return {name: p.grad.numpy() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("with_onednn", [True, False])
def test_training_gradients_match_stock_with_and_without_onednn(with_onednn, accelerated, monkeypatch):
    if not with_onednn:  # a platform where Paddle ships no oneDNN: numpy softmax, Paddle's GELU and LayerNorm
        monkeypatch.setattr(onednn, "load", lambda *args: None)
    model = make(vm.VisualBertForQuestionAnswering, num_labels=5)
    model.train()  # dropout is 0: train mode, deterministic
    batch = tensors(numpy_batch())
    targets = paddle.to_tensor(np.random.default_rng(0).random((2, 5)).astype(np.float32))
    want = train_step_gradients(model, batch, targets)
    accelerated(model)
    assert (kernels.ONEDNN is not None) == with_onednn or platform.machine() != "x86_64"
    got = train_step_gradients(model, batch, targets)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("name", list(RUNNERS))
def test_parity_with_transformers_when_accelerated(name, tmp_path, accelerated):
    # test_convert checks the stock model against transformers' stored outputs; this is the same
    # check through the CPU layers.
    from visualbert import convert

    assert convert.main(["--src", os.path.join(HF, name), "--dst", str(tmp_path)]) == 0
    arch = json.load(open(os.path.join(HF, name, "config.json")))["architectures"][0]
    model = getattr(vm, arch).from_pretrained(str(tmp_path))
    model.eval()
    check(RUNNERS[name](accelerated(model)), name)


def test_accelerate_owns_the_process_settings_and_restore_puts_them_back():
    gc.collect()  # models other tests accelerated and dropped give the settings back
    openmp = None if openmp_blocktime() is None else ctypes.CDLL(cpu.OPENMP_LIBRARY)
    first, second = make(vm.VisualBertModel), make(vm.VisualBertModel)
    paddle.set_flags({"FLAGS_use_stride_kernel": True})
    if openmp:
        openmp.kmp_set_blocktime(150)
    try:
        cpu.accelerate(first)
        cpu.accelerate(second)
        assert stride_kernel() == paddle.is_compiled_with_cuda()  # a CUDA build keeps the GPU's views
        assert openmp_blocktime() in (None, 0) and kernels.ONEDNN is onednn.load()
        cpu.restore(first)  # the other model still runs on the CPU layers: the settings stay
        assert stride_kernel() == paddle.is_compiled_with_cuda() and openmp_blocktime() in (None, 0)
        cpu.restore(second)
        assert stride_kernel() and openmp_blocktime() in (None, 150) and kernels.ONEDNN is None
        # A model collected without restore() gives them back too.
        cpu.accelerate(make(vm.VisualBertModel))
        gc.collect()
        assert stride_kernel() and openmp_blocktime() in (None, 150) and kernels.ONEDNN is None
    finally:
        cpu.restore(first)
        cpu.restore(second)
        if openmp:
            openmp.kmp_set_blocktime(200)


IMPORT_CHECK = """
import ctypes, os, sys, warnings, paddle
import paddlenlp.transformers  # its own imports (scipy, urllib3) add warning filters: not ours to check
library = os.path.join(os.path.dirname(paddle.__file__), "libs", "libiomp5.so")
def settings():
    blocktime = ctypes.CDLL(library).kmp_get_blocktime() if os.path.exists(library) else None
    return (paddle.get_flags(["FLAGS_use_stride_kernel"])["FLAGS_use_stride_kernel"], blocktime, dict(os.environ),
            list(warnings.filters))
before = settings()
for module in sys.argv[1:]:
    __import__(module)
after = settings()
assert before == after, (before[:2], after[:2])
"""


@pytest.mark.slow
def test_importing_changes_no_process_setting():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "KMP_BLOCKTIME"}
    env["PYTHONPATH"] = root
    modules = ["visualbert.modeling", "visualbert.cpu", "visualbert.cli", "visualbert.tasks", "visualbert.engine",
               "visualbert.environment", "visualbert.convert", "visualbert.quiet"]
    proc = subprocess.run([sys.executable, "-c", IMPORT_CHECK] + modules, cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("cpu_kernels", [True, False])
def test_scripts_load_the_model_onto_the_cpu_layers_unless_told_not_to(cpu_kernels, tiny_config):
    paddle.set_device("cpu")
    model = pretrained.load_model(vm.VisualBertForVisualReasoning, tiny_config(), cpu_kernels=cpu_kernels)
    try:
        assert (type(model.cls) is layers.Linear) == cpu_kernels
    finally:
        cpu.restore(model)


# ---------------------------------------------------------------------------- threads


def test_threads_sharing_one_accelerated_model_get_the_sequential_outputs(accelerated):
    model = accelerated(make(vm.VisualBertModel))
    g = np.random.default_rng(0)
    batches = [{"input_ids": paddle.to_tensor(g.integers(0, 50, (2, 12))),
                "visual_embeds": paddle.to_tensor(g.standard_normal((2, 20, 8)).astype(np.float32))}
               for _ in range(4)]
    assert kernels.ONEDNN is not None or platform.machine() != "x86_64"
    with paddle.no_grad():
        want = [model(**batch).last_hidden_state.numpy() for batch in batches]
    errors = []

    def work(batch, expected):
        with paddle.no_grad():
            for _ in range(10):
                errors.append(float(np.abs(model(**batch).last_hidden_state.numpy() - expected).max()))

    threads = [threading.Thread(target=work, args=pair) for pair in zip(batches, want)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 40 and max(errors) < 1e-6


# ---------------------------------------------------------------------------- the oneDNN binding


def numpy_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def paddle_ships_onednn():
    if not os.path.exists(onednn.LIBRARY):
        assert platform.machine() != "x86_64"  # Paddle's x86-64 CPU wheel ships oneDNN
        return False
    return True


def test_onednn_binding_is_for_the_library_paddle_ships():
    if paddle_ships_onednn():
        assert onednn.open_library() is not None  # version, entry points and the self-check all pass


@pytest.mark.parametrize("difference", ["version", "entry point", "constant"])
def test_onednn_binding_refuses_a_library_it_was_not_written_for(monkeypatch, capsys, difference):
    if not paddle_ships_onednn():
        return
    if difference == "version":  # the wheel bundling another oneDNN release
        monkeypatch.setattr(onednn, "WRITTEN_FOR", (3, 5))
        expected = "this binding was written for 3.5"
    elif difference == "entry point":
        monkeypatch.setattr(onednn, "_ENTRY_POINTS", onednn._ENTRY_POINTS + ("dnnl_renamed_function",))
        expected = "lacks dnnl_renamed_function"
    else:  # a C API constant that means another operation there: erf-GELU's id taken by ReLU's (0x20 in v3)
        monkeypatch.setattr(onednn, "_ELTWISE_GELU_ERF", 0x20)
        expected = "failed its self-check: GELU"
    assert onednn.open_library() is None
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "using Paddle's own CPU kernels" in lines[0]


def test_accelerated_model_falls_back_to_stock_kernels_when_the_library_differs(monkeypatch, accelerated, capsys):
    if not paddle_ships_onednn():
        return
    monkeypatch.setattr(onednn, "WRITTEN_FOR", (4, 0))
    onednn.load.cache_clear()
    try:
        model = make(vm.VisualBertForQuestionAnswering, num_labels=5)
        model.eval()
        batch = tensors(numpy_batch())
        stock = model(**batch).logits.numpy()
        accelerated(model)
        assert kernels.ONEDNN is None
        np.testing.assert_allclose(model(**batch).logits.numpy(), stock, atol=1e-5)
        assert "written for 4.0" in capsys.readouterr().err
    finally:
        onednn.load.cache_clear()


def test_onednn_primitive_cache_evicts_and_stays_right_also_from_threads():
    binding = onednn.open_library()
    if binding is None:
        assert platform.machine() != "x86_64"  # Paddle's x86-64 CPU wheel ships oneDNN 3
        return
    binding.cache_size = 2
    g = np.random.default_rng(0)
    inputs = [g.standard_normal((rows, 9)).astype(np.float32) * 3 for rows in range(1, 8)]

    def run_all(results):
        for x in inputs:
            out = np.empty_like(x)
            binding.softmax(x, out)
            results.append(float(np.abs(out - numpy_softmax(x)).max()))

    errors = []
    run_all(errors)
    run_all(errors)  # evicted shapes are built again
    assert len(binding.primitives) == 2 and max(errors) < 1e-6
    threads = [threading.Thread(target=run_all, args=(errors,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(errors) == 6 * len(inputs) and max(errors) < 1e-6


# ---------------------------------------------------------------------------- layers and kernels


def layer_outputs_and_gradients(layer, data, weights):
    """(output, input gradient, weight gradient, bias gradient) of sum(layer(data) * weights)."""
    x = data.clone()
    x.stop_gradient = False
    out = layer(x)
    (out * weights).sum().backward()
    return out.numpy(), x.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy()


def outputs_and_input_gradient(function, data, weights):
    """(output, input gradient) of sum(function(data) * weights)."""
    x = data.clone()
    x.stop_gradient = False
    out = function(x)
    (out * weights).sum().backward()
    return out.numpy(), x.grad.numpy()


def test_linear_matches_nn_linear_forward_and_backward(cpu_process):
    paddle.seed(0)
    ours, plain = layers.Linear(8, 5), paddle.nn.Linear(8, 5)
    plain.set_state_dict(ours.state_dict())
    data = paddle.randn([3, 4, 8])
    results = [layer_outputs_and_gradients(layer, data, paddle.arange(5, dtype="float32")) for layer in (ours, plain)]
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert results[0][0].shape == (3, 4, 5)
    # An input that needs no gradient (the detector features) gets none, and the weights still do.
    ours.clear_gradients()
    ours(data).sum().backward()
    assert data.grad is None and ours.weight.grad is not None


def test_dropout_keeps_1_minus_p_scaled_follows_paddle_seed_and_is_identity_in_eval(cpu_process):
    layer = layers.Dropout(0.25)
    x = paddle.ones([64, 100, 32])
    paddle.seed(3)
    a = layer(x).numpy()
    paddle.seed(3)
    np.testing.assert_array_equal(layer(x).numpy(), a)  # same Paddle seed, same mask
    assert not np.array_equal(layer(x).numpy(), a)  # the generator moved on
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)}
    assert abs((a == 0).mean() - 0.25) < 0.01
    x.stop_gradient = False
    paddle.seed(3)
    layer(x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), a)  # d(x * mask)/dx = mask
    layer.eval()
    assert layer(x) is x


@pytest.mark.parametrize("shape, perm", [([2, 5, 4, 3], [0, 2, 1, 3]), ([2, 5, 4, 3], [0, 2, 3, 1]),
                                         ([1, 1, 4, 3], [0, 2, 1, 3])])
def test_numpy_permute_matches_transpose_forward_and_backward(shape, perm, cpu_process):
    data = paddle.randn(shape)
    weights = paddle.randn([shape[i] for i in perm])
    got = outputs_and_input_gradient(lambda x: kernels.permute(x, perm), data, weights)
    want = outputs_and_input_gradient(lambda x: x.transpose(perm), data, weights)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("threads, with_onednn", [("1", True), ("3", True), ("1", False), ("3", False)])
@pytest.mark.parametrize("bias_shape", [None, [4, 1, 1, 7], [4, 2, 5, 7]])
def test_attention_softmax_matches_paddle_forward_and_backward(monkeypatch, threads, with_onednn, bias_shape,
                                                               accelerated):
    monkeypatch.setenv("OMP_NUM_THREADS", threads)  # 3 threads: uneven slices of the batch
    if not with_onednn:  # numpy's softmax, what platforms without Paddle's oneDNN get
        monkeypatch.setattr(onednn, "load", lambda *args: None)
    accelerated(paddle.nn.Layer())  # the process as accelerate() sets it up
    paddle.seed(0)
    data = paddle.randn([4, 2, 5, 7]) * 4
    weights = paddle.randn([4, 2, 5, 7])
    bias = None
    if bias_shape is not None:
        keep = paddle.rand(bias_shape) > 0.3
        keep[..., 0] = True  # every row keeps one key
        bias = paddle.where(keep, paddle.zeros(bias_shape), paddle.full(bias_shape, paddle.finfo(paddle.float32).min))
    got = outputs_and_input_gradient(lambda x: kernels.attention_softmax(x, bias, 0.125), data, weights)
    want = outputs_and_input_gradient(lambda x: F.softmax(x * 0.125 + (0 if bias is None else bias)), data, weights)
    np.testing.assert_allclose(got[0], want[0], atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)
    np.testing.assert_allclose(got[0].sum(-1), 1.0, atol=1e-6)
    # Without autograd the scores are overwritten in place; the numbers are the same.
    with paddle.no_grad():
        scores = data.clone()
        out = kernels.attention_softmax(scores, bias, 0.125)
    assert out is scores
    np.testing.assert_allclose(out.numpy(), want[0], atol=1e-6)
    if bias_shape is not None:
        assert (got[0][~np.broadcast_to(keep.numpy(), data.shape)] == 0).all()


def test_gelu_is_onednns_and_matches_paddle_forward_and_backward(cpu_process):
    if platform.machine() == "x86_64":
        assert kernels.ONEDNN is not None  # Paddle's x86-64 CPU wheel ships oneDNN 3: the route is live
    paddle.seed(0)
    data = paddle.randn([3, 7, 50]) * 4
    weights = paddle.randn([3, 7, 50])
    got = outputs_and_input_gradient(kernels.gelu, data, weights)
    want = outputs_and_input_gradient(F.gelu, data, weights)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5, atol=1e-6)
    with paddle.no_grad():  # without autograd the input is overwritten in place
        x = data.clone()
        out = kernels.gelu(x)
    assert (out is x) == (kernels.ONEDNN is not None)
    np.testing.assert_allclose(out.numpy(), want[0], rtol=1e-5, atol=1e-6)


def test_layer_norm_matches_nn_layer_norm_forward_and_backward(cpu_process):
    paddle.seed(0)
    ours, plain = layers.LayerNorm(50, epsilon=1e-12), paddle.nn.LayerNorm(50, epsilon=1e-12)
    ours.weight.set_value(paddle.randn([50]))
    ours.bias.set_value(paddle.randn([50]))
    plain.set_state_dict(ours.state_dict())
    data = paddle.randn([3, 7, 50]) * 3 + 1
    weights = paddle.randn([3, 7, 50])
    results = [layer_outputs_and_gradients(layer, data, weights) for layer in (ours, plain)]
    for got, want in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert results[0][0].shape == (3, 7, 50)
    with paddle.no_grad():
        np.testing.assert_allclose(ours(data).numpy(), results[1][0], rtol=1e-5, atol=1e-5)
    # An input that needs no gradient gets none; the parameters still do.
    ours.clear_gradients()
    ours(data).sum().backward()
    assert data.grad is None and ours.weight.grad is not None and ours.bias.grad is not None


def test_small_tensors_take_paddles_kernels_and_large_ones_the_routes(monkeypatch, cpu_process):
    monkeypatch.setattr(kernels, "ROUTE_MIN_ELEMENTS", dict(kernels.ROUTE_MIN_ELEMENTS, softmax=1000))
    with paddle.no_grad():
        small, large = paddle.randn([1, 1, 10, 99]), paddle.randn([1, 1, 10, 100])
        # Without autograd the route overwrites the scores in place; Paddle's softmax makes a new tensor.
        assert kernels.attention_softmax(small, None, 1.0) is not small
        assert kernels.attention_softmax(large, None, 1.0) is large
    # BERT-base at batch 64 takes every route with the shipped thresholds.
    monkeypatch.undo()
    sizes = {"softmax": 64 * 12 * 120 * 120, "gelu": 64 * 120 * 3072, "permute": 64 * 120 * 768,
             "layer_norm": 64 * 120 * 768, "dropout": 1}
    assert all(sizes[route] >= least for route, least in kernels.ROUTE_MIN_ELEMENTS.items())
