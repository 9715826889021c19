"""VCR's image encoder and the VisualBERT models that carry it.

VCR features are not read from disk: the original VisualBERT encodes each kept box with a ResNet-50
trained together with the model (its ``detector.*`` weights are part of the released VCR
checkpoints). :class:`VCRDetector` does the same computation:

1. the ImageNet ResNet-50 stem and stages 1-3 over the padded image (total stride 16; as in the
   original, stages 2 and 3 stride on their first 1 x 1 convolution, Caffe style);
2. ROIAlign of every box to 7 x 7 (spatial scale 1/16, adaptive sampling, no half-pixel offset);
   the box's 14 x 14 polygon mask, shifted by -0.5 and upsampled by a strided 3 x 3 convolution,
   is added to the first 32 channels;
3. stage 4 (stride 1) per box and average pooling -> 2048-d;
4. an 81-way class prediction from that vector (the auxiliary loss; the original weights it by
   ``cnn_loss_ratio``, 0 by default), and the projection to the visual embedding:
   Linear(2048 + 128-d class embedding -> 512) after dropout 0.1, then ReLU.

BatchNorm is frozen (the stored running statistics, fixed scale and shift): with a few images per
batch its batch statistics would be noise. r2c froze the stem-to-stage-3 backbone whole; VisualBERT's
VCR configs (``freeze_detector: false``) train its convolutions, as here. Parameter names follow the original
(``backbone.0`` = conv1, ``backbone.1`` = bn1, ``backbone.4..6`` = stages 1-3, ``after_roi_align.0``
= stage 4, torchvision's block names inside), so a converted checkpoint is a copy. Depth, width
and image size come from the model config's ``vcr_detector`` entry, so tests and the demo can run
a tiny one.
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle.vision.ops import roi_align

from .modeling import Head, VisualBertForMultipleChoice, VisualBertForPreTraining

__all__ = ["DETECTOR_DEFAULTS", "detector_settings", "VCRDetector", "VisualBertForVCR", "VisualBertForVCRPreTraining",
           "BATCHNORM_BUFFERS", "RESNET_PARTS", "detector_state_from_resnet"]

# The original's encoder: ResNet-50 (3, 4, 6, 3 blocks, 64 stem channels), 81 classes (80 COCO +
# the whole image), 128-d class embedding, 32 mask channels, 7 x 7 pooling, images fit to 768 x 384.
DETECTOR_DEFAULTS = {"blocks": [3, 4, 6, 3], "width": 64, "num_classes": 81, "class_embed_dim": 128,
                     "mask_channels": 32, "pool_size": 7, "image_size": [768, 384], "class_loss_ratio": 0.0}
_STRIDE = 16  # of the stem and stages 1-3
# torchvision's BatchNorm buffers -> Paddle's; num_batches_tracked has no Paddle counterpart.
BATCHNORM_BUFFERS = {"running_mean": "_mean", "running_var": "_variance", "num_batches_tracked": None}
# ImageNet ResNet parts (torchvision's and paddle.vision's names) -> where the encoder keeps them.
RESNET_PARTS = {"conv1": "backbone.0", "bn1": "backbone.1", "layer1": "backbone.4", "layer2": "backbone.5",
                "layer3": "backbone.6", "layer4": "after_roi_align.0"}


def detector_settings(config):
    """The ``vcr_detector`` entry of a model config, with the original's values where it says nothing."""
    given = getattr(config, "vcr_detector", None) or {}
    unknown = sorted(set(given) - set(DETECTOR_DEFAULTS))
    if unknown:
        raise ValueError(f"vcr_detector: unknown setting {unknown[0]!r}; known: {', '.join(DETECTOR_DEFAULTS)}")
    return {**DETECTOR_DEFAULTS, **given}


def detector_state_from_resnet(state):
    """An ImageNet ResNet state dict (torchvision or paddle.vision names) as encoder weights.

    Returns {encoder parameter name: array}; the ImageNet classifier (``fc``) is not part of the
    encoder and is left out, as are BatchNorm step counters. Other names are refused.
    """
    out = {}
    for key, value in state.items():
        part, _, rest = key.partition(".")
        if part == "fc":
            continue
        if part not in RESNET_PARTS:
            raise ValueError(f"{key!r} is not a ResNet weight (expected conv1, bn1, layer1..4 or fc)")
        head, _, last = key.rpartition(".")
        if last in BATCHNORM_BUFFERS:
            if BATCHNORM_BUFFERS[last] is None:
                continue
            rest = f"{head}.{BATCHNORM_BUFFERS[last]}".partition(".")[2]
        out[f"{RESNET_PARTS[part]}.{rest}"] = value
    return out


def _frozen_bn(channels):
    fixed = paddle.ParamAttr(trainable=False)
    return nn.BatchNorm2D(channels, weight_attr=fixed, bias_attr=fixed, use_global_stats=True)


class Bottleneck(nn.Layer):
    """ResNet bottleneck with torchvision's parameter names; ``stride`` on the first 1 x 1 conv."""

    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2D(inplanes, planes, 1, stride=stride, bias_attr=False)
        self.bn1 = _frozen_bn(planes)
        self.conv2 = nn.Conv2D(planes, planes, 3, padding=1, bias_attr=False)
        self.bn2 = _frozen_bn(planes)
        self.conv3 = nn.Conv2D(planes, out, 1, bias_attr=False)
        self.bn3 = _frozen_bn(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2D(inplanes, out, 1, stride=stride, bias_attr=False),
                                            _frozen_bn(out))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


def _stage(inplanes, planes, blocks, stride):
    rest = (Bottleneck(planes * 4, planes) for _ in range(blocks - 1))
    return nn.Sequential(Bottleneck(inplanes, planes, stride), *rest)


class VCRDetector(nn.Layer):
    """Boxes of a padded image -> visual embeddings, and the class-prediction loss."""

    def __init__(self, settings, final_dim):
        super().__init__()
        width, blocks = settings["width"], settings["blocks"]
        self.pool_size, self.mask_channels = settings["pool_size"], settings["mask_channels"]
        self.backbone = nn.Sequential(
            nn.Conv2D(3, width, 7, stride=2, padding=3, bias_attr=False), _frozen_bn(width), nn.ReLU(),
            nn.MaxPool2D(3, stride=2, padding=1),
            _stage(width, width, blocks[0], 1),
            _stage(width * 4, width * 2, blocks[1], 2),
            _stage(width * 8, width * 4, blocks[2], 2),
        )
        self.after_roi_align = nn.Sequential(_stage(width * 16, width * 8, blocks[3], 1))
        self.feature_dim = width * 32
        self.object_embed = nn.Embedding(settings["num_classes"], settings["class_embed_dim"])
        self.mask_upsample = nn.Conv2D(1, self.mask_channels, 3, stride=2, padding=1)
        self.obj_downsample = nn.Sequential(nn.Dropout(0.1), nn.Linear(self.feature_dim + settings["class_embed_dim"],
                                                                       final_dim), nn.ReLU())
        self.regularizing_predictor = nn.Linear(self.feature_dim, settings["num_classes"])

    def forward(self, images, boxes, box_mask, box_classes, box_segms):
        """images [B, 3, H, W]; boxes [B, V, 4] (padded pixels), box_mask [B, V] (1 = a box; boxes come
        first), box_classes [B, V], box_segms [B, V, 2P, 2P] -> (features [B, V, D], class loss)."""
        batch, num_boxes = box_mask.shape
        keep = box_mask.astype("bool")
        counts = box_mask.astype("int32").sum(1)
        rois = paddle.masked_select(boxes.astype("float32"), keep.unsqueeze(-1).expand(boxes.shape)).reshape([-1, 4])
        labels = paddle.masked_select(box_classes.astype("int64"), keep)
        # ROIAlign in float32 also under AMP, the dtype of the boxes it samples with
        pooled = roi_align(self.backbone(images).astype("float32"), rois, counts, output_size=self.pool_size,
                           spatial_scale=1.0 / _STRIDE, sampling_ratio=-1, aligned=False)
        segms = paddle.masked_select(box_segms.astype(pooled.dtype), keep.unsqueeze(-1).unsqueeze(-1).expand(
            box_segms.shape)).reshape([-1, 1, box_segms.shape[-2], box_segms.shape[-1]])
        shape_hint = self.mask_upsample(segms - 0.5)
        pooled = paddle.concat([pooled[:, :self.mask_channels] + shape_hint, pooled[:, self.mask_channels:]], 1)
        per_box = self.after_roi_align(pooled).mean([2, 3])
        class_loss = F.cross_entropy(self.regularizing_predictor(per_box), labels)
        features = self.obj_downsample(paddle.concat([per_box, self.object_embed(labels)], -1))
        where = paddle.nonzero(keep.reshape([-1])).reshape([-1])
        padded = paddle.zeros([batch * num_boxes, features.shape[-1]], dtype=features.dtype)
        padded = paddle.scatter(padded, where, features)
        return padded.reshape([batch, num_boxes, -1]), class_loss


def _with_regions(model, images, boxes, box_mask, box_classes, box_segms, choices=None):
    features, class_loss = model.detector(images, boxes, box_mask, box_classes, box_segms)
    mask = box_mask.astype("int64")
    if choices is not None:  # the same regions beside each choice's text
        features = features.unsqueeze(1).expand([features.shape[0], choices, *features.shape[1:]])
        mask = mask.unsqueeze(1).expand([mask.shape[0], choices, mask.shape[1]])
    return features, mask, class_loss


class VisualBertForVCR(VisualBertForMultipleChoice):
    """The multiple-choice model with its detector: images and boxes in, a score per choice out.

    Text inputs have a choice axis ([B, 4, T], ``image_text_alignment`` [B, 4, V, K]); the regions
    are the image's, shared by the four choices. The loss is the choice's cross-entropy plus
    ``class_loss_ratio`` x the detector's class-prediction loss.
    """

    def __init__(self, config):
        super().__init__(config)
        self.detector_settings = detector_settings(config)
        self.detector = VCRDetector(self.detector_settings, config.visual_embedding_dim)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, images=None, boxes=None,
                box_mask=None, box_classes=None, box_segms=None, image_text_alignment=None, labels=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        visual, visual_mask, class_loss = _with_regions(self, images, boxes, box_mask, box_classes, box_segms,
                                                        choices=input_ids.shape[1])
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              visual_embeds=visual, visual_attention_mask=visual_mask,
                              image_text_alignment=image_text_alignment, labels=labels,
                              output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                              return_dict=True)
        ratio = self.detector_settings["class_loss_ratio"]
        if out.loss is not None and ratio:
            out.loss = out.loss + ratio * class_loss
        return out if return_dict is None or return_dict else out.to_tuple()


class VisualBertForVCRPreTraining(VisualBertForPreTraining):
    """Masked LM on VCR text over the detector's regions (what ``visualbert-vcr-pre`` was trained as)."""

    def __init__(self, config):
        super().__init__(config)
        self.detector_settings = detector_settings(config)
        self.detector = VCRDetector(self.detector_settings, config.visual_embedding_dim)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, images=None, boxes=None,
                box_mask=None, box_classes=None, box_segms=None, image_text_alignment=None, labels=None,
                sentence_image_labels=None, predict_masked_only=False, output_attentions=None,
                output_hidden_states=None, return_dict=None):
        visual, visual_mask, class_loss = _with_regions(self, images, boxes, box_mask, box_classes, box_segms)
        out = super().forward(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              visual_embeds=visual, visual_attention_mask=visual_mask,
                              image_text_alignment=image_text_alignment, labels=labels,
                              sentence_image_labels=sentence_image_labels, predict_masked_only=predict_masked_only,
                              output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                              return_dict=True)
        ratio = self.detector_settings["class_loss_ratio"]
        if out.loss is not None and ratio:
            out.loss = out.loss + ratio * class_loss
        return out if return_dict is None or return_dict else out.to_tuple()


# The VCR models beside modeling.HEADS (they carry the image encoder, so they live here), by the
# name `python -m visualbert.convert --head` takes.
VCR_HEADS = {
    "vcr": Head(VisualBertForVCR, "a multiple-choice head with the VCR image encoder"),
    "vcr_pretraining": Head(VisualBertForVCRPreTraining, "the pre-training heads with the VCR image encoder"),
}
