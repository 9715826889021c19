"""Ask a trained model about one image: ``python -m visualbert.ask --model RUN/best --image photo.jpg --question "..."``.

VQA models print their top answers with probabilities; NLVR2 models (``--image2``, the question is
the statement) print true or false with its probability. Several ``--question`` flags ask about one
image, whose features are made once. The image goes through the extractor the model's training
features came from, with the same settings (recorded in the model, see ``visualbert.provenance``).
When those features cannot be made from a raw image (Detectron or imported features), the command
says so in one line: pass the image's rows from a store with ``--features STORE --key KEY``, or,
for a model trained on boxes from a file, the image's boxes with ``--boxes``.

``--explain out.png`` draws where the answer looked (``visualbert.explain``); ``--json`` prints one
JSON object instead of text. This command is a thin layer over ``visualbert.pipeline``.
"""
import argparse
import json
import sys

from visualbert import quiet
from visualbert.errors import USER_ERRORS, run_command
from visualbert.inference import add_engine_arg

__all__ = ["build_parser", "main"]


def build_parser():
    p = argparse.ArgumentParser(prog="python -m visualbert.ask", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a trained model: RUN/best, RUN/model, a checkpoint, or RUN")
    p.add_argument("--image", default=None, help="the image (.jpg / .png / anything PIL reads)")
    p.add_argument("--image2", default=None, help="NLVR2 models: the right image (--image is the left)")
    p.add_argument("--question", action="append", required=True,
                   help="the question (VQA) or statement (NLVR2); repeat to ask several about one image")
    p.add_argument("--top_k", type=_positive_int, default=5, help="VQA: how many answers to print (default 5)")
    p.add_argument("--features", default=None, metavar="STORE",
                   help="take the image's features from this packed store instead of making them (with --key)")
    p.add_argument("--key", default=None, help="the image's key in --features")
    p.add_argument("--key2", default=None, help="NLVR2: the right image's key in --features")
    p.add_argument("--boxes", default=None, metavar="FILE.json",
                   help="regions for a model trained on boxes from a file: [[x1, y1, x2, y2], ...] in --image's pixels")
    p.add_argument("--weights", default=None, metavar="FILE.pdparams",
                   help="the backbone weights the features were made with, when they are no longer where extract "
                        "read them")
    p.add_argument("--explain", default=None, metavar="OUT.png",
                   help="VQA: draw where the answer looked (one picture; with several questions, the first); with "
                        "--features and no --image, one bar per region")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="where the model runs (default cpu)")
    add_engine_arg(p)
    return p


def _positive_int(text):
    from .cli import positive_int

    return positive_int(text)


def _read_boxes(path):
    from .formats.common import read_json

    return read_json(path, "--boxes, a JSON list [[x1, y1, x2, y2], ...] in --image's pixels")


def _is_nlvr2(model_dir):
    from . import pretrained
    from .formats.common import read_json

    config = read_json(_config_path(pretrained.resolve_model_path(model_dir)), "the model's config JSON")
    return (config.get("architectures") or [None])[0] == "VisualBertForVisualReasoning"


def _config_path(model_dir):
    import os

    for name in ("config.json", "model_config.json"):
        if os.path.isfile(os.path.join(model_dir, name)):
            return os.path.join(model_dir, name)
    return os.path.join(model_dir, "config.json")


def ask(args):
    """The answers as a JSON-able dict (what --json prints)."""
    from . import pipelines
    if args.features and not args.key:
        raise ValueError("--features needs --key (the image's key in the store)")
    if args.key and not args.features:
        raise ValueError("--key needs --features (the store the key is in)")
    if args.image is None and not args.features:
        raise ValueError("pass --image (or --features STORE --key KEY)")
    nlvr2 = _is_nlvr2(args.model)
    if nlvr2:
        if args.image2 is None and not args.key2:
            raise ValueError("this is an NLVR2 model: pass --image2 (or --key2) and a statement as --question")
        if args.explain:
            raise ValueError("--explain draws VQA answers; this is an NLVR2 model")
    elif args.image2 or args.key2:
        raise ValueError("--image2 / --key2 are for NLVR2 models; this is a VQA model")

    pipe = pipelines.pipeline("nlvr2" if nlvr2 else "vqa", args.model, device=args.device, weights=args.weights,
                              engine=args.engine)
    source = pipelines.read_store_features(args.features, args.key) if args.features else args.image
    if not args.features and not args.boxes:
        pipe.check_reproducible()
    result = {"model": args.model, "task": "nlvr2" if nlvr2 else "vqa", "image": args.image,
              "features": pipe.provenance.get("extractor") if pipe.provenance and not args.features else "store",
              "results": []}
    if nlvr2:
        source2 = pipelines.read_store_features(args.features, args.key2) if args.key2 else args.image2
        for statement in args.question:
            out = pipe(features=source if args.features else None, image=args.image,
                       features2=source2 if args.key2 else None, image2=args.image2, statement=statement)
            result["results"].append({"statement": statement, **out})
        result["image2"] = args.image2
        return result
    boxes = _read_boxes(args.boxes) if args.boxes else None
    answered = pipe.answer([(source, q) for q in args.question], top_k=args.top_k, boxes=boxes,
                           explain=bool(args.explain))
    for question, item in zip(args.question, answered):
        result["results"].append({"question": question, "answers": item["answers"]})
    if args.explain:
        from .explain import draw_attention
        from .pipelines import load_image

        first = answered[0]
        image = first["image"]
        if image is None and args.image is not None:  # store features, drawn on the image they came from
            image = load_image(args.image)
        result["explain"] = draw_attention(args.explain, image, first["geometry"], first["attention"],
                                           args.question[0], first["answers"])
    return result


def _print_text(result):
    for item in result["results"]:
        if result["task"] == "nlvr2":
            print(f"{item['statement']}\n  {'true' if item['answer'] else 'false'}  {item['score']:.3f}")
            continue
        print(f"Q: {item['question']}")
        width = max(len(a["answer"]) for a in item["answers"])
        for a in item["answers"]:
            print(f"  {a['answer']:<{width}}  {a['score']:.3f}")
    if result.get("explain"):
        print(f"explain: {result['explain']}")


def main(argv=None):
    quiet.silence()
    args = build_parser().parse_args(argv)

    def work():
        result = ask(args)
        if args.json:
            print(json.dumps(result))
        else:
            _print_text(result)

    # KeyError, TypeError: a --features store without the --key, a boxes file of the wrong shape
    return run_command(work, catch=USER_ERRORS + (KeyError, TypeError))


if __name__ == "__main__":
    sys.exit(main())
