"""Region-feature stores: the original release's per-image ``.npy`` layouts and a packed, memory-mapped store.

Feature types (the original scripts' ``--image_feature_type`` names) and where their files live under
``--input_dir``:

========================  ===========================================================  ======
type                      per-image file for key ``K``                                  dim
========================  ===========================================================  ======
coco_detectron_fix_100    ``data/detectron_fix_100/fc6/vqa/{split}/K.npy``              2048
                          split in train2014 / val2014 / test2015
coco_detectron_fix_144    ``data/detectron_fix_144/nlvr2/{split}/feature_1024dim/K.npy`` 1024
                          split in train / val (COCO train2014 / val2014 images)
nlvr2_detectron_fix_144   ``data/detectron_fix_144/{split}/feature_1024dim/K.npy``      1024
                          split in train / dev / test1 / test2
========================  ===========================================================  ======

A key names one image and carries its split, so one store serves every split of a type:
``COCO_val2014_000000123456`` (COCO, both layouts) or ``dev-850-0-img0.png`` (NLVR2; the file is
``dev-850-0-img0.png.npy``). Any number N >= 1 of rows is accepted; ``max_regions`` caps it.

Packed store: ``features.bin`` (all rows of all images back to back, fp16 by default) read through
a memory map, ``index.json`` (key -> row offset, rows) and ``meta.json`` (written last). It is
built by ``python -m visualbert.features pack`` into ``<feature root>/packed/<split or all>/``,
where :func:`open_features` finds it without being told; keys it lacks fall back to the
per-image files. A pack in progress lives in ``<out>.partial/`` and is renamed into place only when
complete, so a killed pack never leaves a store that looks finished, and rerunning resumes it.
The index records each source file's size and mtime: a per-image file that changed after packing is
refused rather than silently served from the old rows (stores packed before that record existed
are read with a one-line notice).

Features must be finite: a NaN or Inf row would turn every prediction into the same answer
without an error, so readers refuse it naming the image and the file.
"""
from .layouts import (FEATURE_TYPES, Layout, check_split, coco_image_key, get_layout, read_feature_file,
                      source_stamp, walk_files)
from .pack import PackWriter, inspect_features, pack_features
from .stores import (IMAGE_EXTENSIONS, PACK_FORMAT, PACK_VERSION, DirectoryFeatures, FeatureStore, PackedStore,
                     check_feature_dim, default_pack_dir, open_feature_dir, open_features)

__all__ = [
    "FEATURE_TYPES",
    "Layout",
    "FeatureStore",
    "PackedStore",
    "open_features",
    "open_feature_dir",
    "DirectoryFeatures",
    "PackWriter",
    "check_feature_dim",
    "coco_image_key",
    "pack_features",
    "inspect_features",
    "read_feature_file",
    "walk_files",
]
