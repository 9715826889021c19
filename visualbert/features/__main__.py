"""python -m visualbert.features pack | inspect | import: build, check or import region-feature stores."""
import argparse
import json
import sys

from ..examples import example_image_keys, load_dataset
from ..errors import run_command
from . import FEATURE_TYPES, PackedStore, inspect_features, pack_features
from .pack import inspect_store
from .importers import import_features


def _expected_keys(dataset, splits, input_dir, annotation_dir):
    keys = []
    for ds in load_dataset(dataset, splits, input_dir=input_dir, annotation_dir=annotation_dir):
        for ex in ds:
            keys.extend(example_image_keys(ex))
    return keys


def main(argv=None):
    # a store being written stays as <output>.partial, which the same command resumes
    return run_command(lambda: _run(argv))


def _run(argv):
    parser = argparse.ArgumentParser(prog="python -m visualbert.features",
                                     description="Region-feature stores: pack per-image .npy files into one memory-mapped store, import a "
                                                 "public feature release, or inspect a store.")
    sub = parser.add_subparsers(dest="command", metavar="{pack,inspect,import}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--image_feature_type", required=True, help=f"one of {', '.join(FEATURE_TYPES)}")
    common.add_argument("--input_dir", required=True, help="data root, e.g. ./X_COCO/ or ./X_NLVR/ (features under data/...)")
    common.add_argument("--split", default=None, help="one split directory (default: all splits of the type)")
    p = sub.add_parser("pack", parents=[common], help="pack per-image .npy files into one memory-mapped store (resumable, atomic)")
    p.add_argument("--out", default=None, help="store directory (default: <feature root>/packed/<split or all>, found by readers automatically)")
    p.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="on-disk dtype (default float16)")
    i = sub.add_parser("inspect", help="counts, dims, rows min/mean/max, and ids missing for a dataset",
                       description="Inspect the features of --image_feature_type under --input_dir, or the packed store "
                                   "--features names (as the training scripts' --features).")
    i.add_argument("--image_feature_type", default=None, help=f"one of {', '.join(FEATURE_TYPES)} (with --input_dir)")
    i.add_argument("--input_dir", default=None, help="data root, e.g. ./X_COCO/ or ./X_NLVR/ (features under data/...)")
    i.add_argument("--split", default=None, help="one split directory (default: all splits of the type)")
    i.add_argument("--features", default=None, metavar="DIR",
                   help="instead: a packed store written by python -m visualbert.extract or features import")
    i.add_argument("--dataset", choices=["coco_captions", "vqa2", "nlvr2"], default=None,
                   help="report the images this dataset's --dataset_splits need but the store lacks")
    i.add_argument("--dataset_splits", default=None, help="comma-separated dataset splits for --dataset (e.g. train,minival)")
    i.add_argument("--annotation_dir", default=None, help="annotation dir for --dataset (default <input_dir>/annotations, then PaddleNLP data home)")
    i.add_argument("--json", action="store_true", help="print the report as one JSON object")
    m = sub.add_parser("import", help="import a public feature release (bottom-up-attention TSV, HDF5, .npy/.npz folder) "
                                      "into a packed store for --features",
                       description="Import a public feature release into a packed store that the scripts read with "
                                   "--features. Corrupt images are named one per line and nothing is published.")
    m.add_argument("--format", required=True, choices=["butd_tsv", "h5", "npz_dir"],
                   help="butd_tsv: bottom-up-attention TSV (base64 boxes/features; LXMERT's variant too); h5: HDF5, one "
                        "dataset per image, one array + image ids, or the original Flickr30K {split}.hdf5 + "
                        "{split}_imgid2idx.pkl (boxes kept); npz_dir: a folder of .npy/.npz per image")
    m.add_argument("--src", required=True, nargs="+", help="the TSV / HDF5 file(s) or the folder(s)")
    m.add_argument("--output_dir", required=True, help="the packed store to write (resumable, published when complete)")
    m.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="on-disk dtype (default float16)")
    args = parser.parse_args(argv)
    if args.command is None:  # a bare `python -m visualbert.features`: say what it can do
        parser.print_help()
        return 2
    if args.command == "inspect" and bool(args.features) == bool(args.image_feature_type or args.input_dir):
        i.error("pass either --features DIR, or --image_feature_type with --input_dir")
    if args.command == "inspect" and not args.features and not (args.image_feature_type and args.input_dir):
        i.error("--image_feature_type and --input_dir go together")
    if args.command == "import":
        out, corrupt = import_features(args.format, args.src, args.output_dir, dtype=args.dtype)
        if corrupt:
            raise SystemExit(f"error: {len(corrupt)} corrupt images (named above); nothing was published; fix or remove "
                             "them and rerun (the images already read are kept)")
        meta = PackedStore(out).meta
        print(f"imported {meta['num_images']} images, {meta['num_rows']} rows x {meta['dim']} ({meta['dtype']}) into {out}")
        return 0
    if args.command == "pack":
        out = pack_features(args.image_feature_type, args.input_dir, out=args.out, split=args.split, dtype=args.dtype)
        meta = PackedStore(out).meta
        print(f"packed {meta['num_images']} images, {meta['num_rows']} rows x {meta['dim']} ({meta['dtype']}) into {out}")
    else:
        expected = None
        if args.dataset:
            if not args.dataset_splits:
                raise ValueError("--dataset needs --dataset_splits")
            expected = _expected_keys(args.dataset, args.dataset_splits.split(","), args.input_dir, args.annotation_dir)
        if args.features:
            report = inspect_store(args.features, expected_keys=expected)
        else:
            report = inspect_features(args.image_feature_type, args.input_dir, split=args.split, expected_keys=expected)
        if args.json:
            print(json.dumps(report))
        else:
            print(f"{report['image_feature_type']} at {report['root']}")
            print(f"  images: {report['images']} ({report['images_packed']} from packed stores {report['packed_stores']})")
            print(f"  dims: {report['dims']}")
            print(f"  rows per image: min {report['rows_min']}  mean {report['rows_mean']:.1f}  max {report['rows_max']}")
            if report.get("made_by"):
                print("  made by: " + ", ".join(f"{k} {v}" for k, v in report["made_by"].items() if v is not None))
            for line in report["bad_files"]:
                print(f"  bad: {line}")
            for path in report["changed_since_packing"]:
                print(f"  changed since packing (pack again): {path}")
            if expected is not None:
                print(f"  missing: {len(report['missing'])} of {report['expected']} images the dataset needs")
                for k in report["missing"][:20]:
                    print(f"    {k}")
                if len(report["missing"]) > 20:
                    print(f"    ... and {len(report['missing']) - 20} more")
        if report["bad_files"] or report["changed_since_packing"] or (expected is not None and report["missing"]):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
