"""VCR's image encoder: ROIAlign by hand, frozen BatchNorm, and a released-layout VCR checkpoint
(detector included, torchvision ResNet-50 names) converting key for key and running on an image."""
import json
import os
import struct
import zipfile

import numpy as np
import paddle
import pytest
from PIL import Image
from safetensors.numpy import load_file

from visualbert import convert as cv
from visualbert import vcr_inputs
from visualbert.modeling import VisualBertConfig
from visualbert.vcr_detector import VisualBertForVCR

HF = os.path.join(os.path.dirname(__file__), "fixtures", "hf")
TINY = {"blocks": [3, 4, 6, 3], "width": 2, "class_embed_dim": 8, "mask_channels": 4, "image_size": [64, 32]}


def one_roi(feature, box, scale=1.0, aligned=False):
    from paddle.vision.ops import roi_align

    return roi_align(paddle.to_tensor(feature[None, None].astype("float32")), paddle.to_tensor([box], "float32"),
                     paddle.to_tensor([1], "int32"), output_size=2, spatial_scale=scale, sampling_ratio=-1,
                     aligned=aligned).numpy()[0, 0]


def test_roi_align_against_hand_worked_values():
    ys, xs = np.mgrid[0:8, 0:8].astype("float64")
    # Linear map: each 2 x 2 bin of box (1,1)-(5,5) averages to its centre (2 or 4 in x and y).
    np.testing.assert_allclose(one_roi(xs + 10 * ys, [1, 1, 5, 5]), [[22, 24], [42, 44]])
    # Same box at half scale: (2,2)-(10,10) * 0.5.
    np.testing.assert_allclose(one_roi(xs + 10 * ys, [2, 2, 10, 10], scale=0.5), [[22, 24], [42, 44]])
    # x^2: adaptive sampling takes 2 points per bin at x = 1.5, 2.5 (bilinear 2.5, 6.5 -> 4.5) and
    # x = 3.5, 4.5 (12.5, 20.5 -> 16.5), not the centre's 4 and 16.
    np.testing.assert_allclose(one_roi(xs ** 2, [1, 1, 5, 5]), [[4.5, 16.5], [4.5, 16.5]])
    # The original's ROIAlign has no half-pixel offset; the "aligned" variant would give 16.5, ...
    assert one_roi(xs + 10 * ys, [1, 1, 5, 5], aligned=True)[0, 0] == pytest.approx(16.5)


# ---------------------------------------------------------------- a released-layout VCR checkpoint


def torchvision_resnet50(width, rng):
    """A torchvision ResNet-50 state dict (its key names and depth; channels scaled by width / 64)."""
    state = {}

    def bn(name, c):
        state.update({f"{name}.weight": rng.random(c) + 0.5, f"{name}.bias": rng.standard_normal(c) * 0.1,
                      f"{name}.running_mean": rng.standard_normal(c) * 0.1, f"{name}.running_var": rng.random(c) + 0.5,
                      f"{name}.num_batches_tracked": np.array(7, dtype=np.int64)})

    def conv(name, cout, cin, k):
        state[f"{name}.weight"] = rng.standard_normal((cout, cin, k, k)) * (2.0 / (cin * k * k)) ** 0.5

    conv("conv1", width, 3, 7)
    bn("bn1", width)
    inplanes = width
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        planes = width * 2 ** (stage - 1)
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            conv(f"{p}.conv1", planes, inplanes, 1)
            bn(f"{p}.bn1", planes)
            conv(f"{p}.conv2", planes, planes, 3)
            bn(f"{p}.bn2", planes)
            conv(f"{p}.conv3", planes * 4, planes, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                conv(f"{p}.downsample.0", planes * 4, inplanes, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    state["fc.weight"], state["fc.bias"] = rng.standard_normal((1000, inplanes)), np.zeros(1000)
    return state


def original_vcr_state(rng):
    """What uclanlp's VCR .th holds: the detector (ResNet parts renamed as its nn.Sequential) + BERT."""
    resnet = torchvision_resnet50(TINY["width"], rng)
    where = {"conv1": "backbone.0", "bn1": "backbone.1", "layer1": "backbone.4", "layer2": "backbone.5",
             "layer3": "backbone.6", "layer4": "after_roi_align.0"}
    state = {}
    for key, value in resnet.items():
        first, _, rest = key.partition(".")
        if first != "fc":  # the detector keeps no ImageNet classifier
            state[f"detector.{where[first]}.{rest}"] = value
    feature_dim = TINY["width"] * 32
    state["detector.object_embed.weight"] = rng.standard_normal((81, TINY["class_embed_dim"]))
    state["detector.mask_upsample.weight"] = rng.standard_normal((TINY["mask_channels"], 1, 3, 3))
    state["detector.mask_upsample.bias"] = rng.standard_normal(TINY["mask_channels"])
    state["detector.obj_downsample.1.weight"] = rng.standard_normal((16, feature_dim + TINY["class_embed_dim"])) * 0.1
    state["detector.obj_downsample.1.bias"] = rng.standard_normal(16) * 0.1
    state["detector.regularizing_predictor.weight"] = rng.standard_normal((81, feature_dim)) * 0.1
    state["detector.regularizing_predictor.bias"] = np.zeros(81)
    for key, value in load_file(os.path.join(HF, "multiple_choice", "model.safetensors")).items():
        key = key.replace("visual_bert.", "bert.bert.").replace("visual_projection", "projection")
        key = key.replace("visual_token_type_embeddings", "token_type_embeddings_visual")
        key = key.replace("visual_position_embeddings", "position_embeddings_visual")
        state[key.replace("cls.", "bert.classifier.", 1) if key.startswith("cls.") else key] = value
    return {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in state.items()}


def _unicode(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value):
    return b"J" + struct.pack("<i", value)


def _ints(values):
    return b"(" + b"".join(_int(v) for v in values) + b"t"


def write_torch_zip(path, state):
    """A torch.save zip archive of ``state``, written by hand (no torch): pickle opcodes for
    ``{name: torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, {})}``."""
    storage_types = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage"}
    body, blobs = [b"\x80\x02}("], {}
    for index, (name, value) in enumerate(state.items()):
        value = np.ascontiguousarray(value)
        key = str(index)
        blobs[key] = value.astype(value.dtype.newbyteorder("<")).tobytes()
        strides = [s // value.itemsize for s in value.strides]
        persistent = (b"(" + _unicode("storage") + _unicode(storage_types[value.dtype]) + _unicode(key)
                      + _unicode("cpu") + _int(value.size) + b"tQ")
        body.append(_unicode(name) + b"ctorch._utils\n_rebuild_tensor_v2\n(" + persistent + _int(0)
                    + _ints(value.shape) + _ints(strides) + b"\x89}tR")
    body.append(b"u.")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"".join(body))
        archive.writestr("archive/byteorder", "little")
        for key, blob in blobs.items():
            archive.writestr(f"archive/data/{key}", blob)


def image_batch(rng):
    """One synthetic image, its metadata boxes, rendered as the model's detector input (2 objects)."""
    image = Image.fromarray((rng.random((60, 90, 3)) * 255).astype(np.uint8))
    pixels, boxes = vcr_inputs.prepare_image(image, [[5, 5, 40, 50], [30, 10, 85, 55]], image_size=TINY["image_size"])
    masks = np.concatenate([np.ones((1, 14, 14), np.float32),
                            vcr_inputs.object_masks([[5, 5, 40, 50], [30, 10, 85, 55]],
                                                    [[[[5, 5], [40, 5], [40, 50]]], [[[30, 10], [85, 10], [30, 55]]]])])
    choices, length = 4, 7
    return {"input_ids": paddle.to_tensor(rng.integers(5, 100, (1, choices, length))),
            "attention_mask": paddle.ones([1, choices, length], "int64"),
            "token_type_ids": paddle.to_tensor(np.tile([0, 0, 0, 0, 1, 1, 1], (1, choices, 1))),
            "images": paddle.to_tensor(pixels[None]), "boxes": paddle.to_tensor(boxes[None]),
            "box_mask": paddle.ones([1, 3], "int64"), "box_classes": paddle.to_tensor([[0, 1, 3]]),
            "box_segms": paddle.to_tensor(masks[None]),
            "image_text_alignment": paddle.to_tensor(np.broadcast_to([[-1], [2], [5]], (1, choices, 3, 1)).copy())}


def test_released_vcr_checkpoint_converts_every_key_and_runs_on_an_image(tmp_path):
    rng = np.random.default_rng(0)
    state = original_vcr_state(rng)
    src = tmp_path / "vcr_best.th"
    write_torch_zip(src, state)
    model = cv.convert(src, tmp_path / "vcr", config=os.path.join(HF, "multiple_choice", "config.json"))
    assert isinstance(model, VisualBertForVCR)
    assert model.config.vcr_detector["blocks"] == [3, 4, 6, 3] and model.config.vcr_detector["width"] == 2
    ours = {k: v.numpy() for k, v in model.state_dict().items()}
    linear = {f"{name}.weight" for name, layer in model.named_sublayers() if isinstance(layer, paddle.nn.Linear)}
    landed = set()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        name = cv._original_key(key)
        got = ours[name]
        np.testing.assert_array_equal(got, value.T if name in linear else value, err_msg=key)
        landed.add(name)
    assert landed == set(ours)  # every weight of the model came from the file, every detector key landed
    # ResNet-50 has 53 convolutions, each with a BatchNorm (4 tensors); then 7 tensors of its own
    assert sum(k.startswith("detector.") for k in landed) == 53 + 4 * 53 + 7

    model.eval()
    batch = image_batch(rng)
    logits = model(**batch).logits.numpy()
    assert logits.shape == (1, 4) and np.isfinite(logits).all()
    reloaded = VisualBertForVCR.from_pretrained(str(tmp_path / "vcr"))
    reloaded.eval()
    np.testing.assert_allclose(reloaded(**batch).logits.numpy(), logits, rtol=1e-5, atol=1e-6)


def test_batchnorm_is_frozen_and_the_class_loss_is_weighted():
    config = VisualBertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                              visual_embedding_dim=16, vocab_size=100, max_position_embeddings=32,
                              vcr_detector=dict(TINY, blocks=[1, 1, 1, 1]))
    paddle.seed(0)
    model = VisualBertForVCR(config)
    model.train()
    bn = model.detector.backbone[1]
    before = bn._mean.numpy().copy()
    assert bn.weight.stop_gradient and bn.bias.stop_gradient
    batch = image_batch(np.random.default_rng(1))
    labels = paddle.to_tensor([2])
    paddle.seed(1)
    plain = float(model(**batch, labels=labels).loss)
    np.testing.assert_array_equal(bn._mean.numpy(), before)  # training forward leaves the statistics alone
    model.detector_settings["class_loss_ratio"] = 0.5
    paddle.seed(1)
    _, class_loss = model.detector(batch["images"], batch["boxes"], batch["box_mask"], batch["box_classes"],
                                   batch["box_segms"])
    paddle.seed(1)
    weighted = float(model(**batch, labels=labels).loss)
    assert weighted == pytest.approx(plain + 0.5 * float(class_loss), rel=1e-4)


def test_bert_initialisation_of_a_vcr_model_starts_the_image_encoder_fresh(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"visual_embedding_dim": 16, "vcr_detector": dict(TINY, blocks=[1, 1, 1, 1])}))
    model = cv.convert_bert(os.path.join(HF, "bert"), head="vcr", config=str(config))
    assert isinstance(model, VisualBertForVCR) and model.detector.feature_dim == 64
    bert = load_file(os.path.join(HF, "bert", "model.safetensors"))
    word = next(k for k in bert if k.endswith("word_embeddings.weight"))
    np.testing.assert_array_equal(model.visual_bert.embeddings.word_embeddings.weight.numpy(), bert[word])


def test_a_multiple_choice_checkpoint_without_encoder_is_taken_by_the_vcr_model(tmp_path):
    """A converted HuggingFace VCR model (no detector.*) still predicts and fine-tunes: same head, fresh encoder."""
    from visualbert import pretrained

    cv.convert(os.path.join(HF, "multiple_choice"), tmp_path / "mc")
    model = pretrained.load_model(VisualBertForVCR, str(tmp_path / "mc"), new_head=False, cpu_kernels=False)
    converted = load_file(os.path.join(HF, "multiple_choice", "model.safetensors"))
    np.testing.assert_array_equal(model.cls.weight.numpy(), converted["cls.weight"].T)
    assert model.detector.feature_dim == 2048  # the original's encoder, untrained
    cv.convert(os.path.join(HF, "nlvr2"), tmp_path / "nlvr2")
    with pytest.raises(SystemExit, match="an NLVR2 head .* needs a multiple-choice head with the VCR image encoder"):
        pretrained.load_model(VisualBertForVCR, str(tmp_path / "nlvr2"), new_head=False, cpu_kernels=False)


def test_imagenet_resnet_weights_start_the_image_encoder(tmp_path):
    """convert --resnet: a torchvision .pth or a paddle.vision .pdparams ResNet-50 lands key for key."""
    resnet = torchvision_resnet50(TINY["width"], np.random.default_rng(2))
    resnet = {k: (v.astype(np.float32) if v.dtype == np.float64 else v) for k, v in resnet.items()}
    torch_file = tmp_path / "resnet50.pth"
    write_torch_zip(torch_file, resnet)
    paddle_names = {k.replace("running_mean", "_mean").replace("running_var", "_variance"): v
                    for k, v in resnet.items() if not k.endswith("num_batches_tracked")}
    paddle_file = tmp_path / "resnet50.pdparams"
    paddle.save(paddle_names, str(paddle_file))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"visual_embedding_dim": 16, "vcr_detector": TINY}))
    for source in (torch_file, paddle_file):
        model = cv.convert(os.path.join(HF, "bert"), tmp_path / source.suffix[1:], head="vcr", config=str(config),
                           resnet=source)
        encoder = {k: v.numpy() for k, v in model.detector.state_dict().items()}
        used = 0
        for key, value in resnet.items():
            if key.startswith("fc.") or key.endswith("num_batches_tracked"):
                continue
            name = cv.detector_state_from_resnet({key: value}).popitem()[0]
            np.testing.assert_array_equal(encoder[name], value, err_msg=f"{source.name}: {key}")
            used += 1
        assert used == 53 + 4 * 53  # every convolution and BatchNorm of ResNet-50
    with pytest.raises(ValueError, match=r"resnet50.pth: does not fit the image encoder: missing backbone.0.weight"):
        cv.load_resnet(model, str(_without(torch_file, "conv1.weight", resnet)))
    with pytest.raises(ValueError, match="only the VCR models have an image encoder"):
        cv.load_resnet(cv.convert_bert(os.path.join(HF, "bert"), head="vqa", visual_embedding_dim=16), str(torch_file))


def _without(path, key, state):
    write_torch_zip(path, {k: v for k, v in state.items() if k != key})
    return path
