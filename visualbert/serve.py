"""A trained VQA model as a local web page and JSON API: ``python -m visualbert.serve --model RUN/best``.

- ``GET /``: a page where you drop an image, type a question and see the top answers as bars and
  the picture of where the answer looked (``visualbert.explain``).
- ``POST /v1/vqa``: ``multipart/form-data`` with ``image`` (the file), ``question`` and optionally
  ``top_k`` (1-20, default 5) and ``explain`` (``1``: add ``explain_png``, the picture as base64) ->
  ``{"question", "answers": [{"answer", "score"}], "explain_png"?}``; the answers are ``ask``'s.
- ``GET /v1/health``: ``{"status": "ok", "model", "features"}``.

The server binds 127.0.0.1 unless ``--host`` says otherwise. The model loads once, before the
first request; requests are answered one model call at a time on one worker thread (Paddle's
dygraph state is per process), while uploads are read and checked concurrently. A bad request gets
a 4xx with one ``{"error": "..."}`` line and the server stays up: not multipart, an unknown or
missing field, an empty question or one over ``--max_question_chars``, a file that is not an image,
an image over ``--max_megapixels``; an upload over ``--max_upload_mb`` is refused from its
Content-Length before its body is read (413), or as soon as its streamed body passes the limit.
"""
import argparse
import asyncio
import base64
import concurrent.futures
import email.parser
import email.policy
import io
import os
import socket
import sys

from visualbert import quiet
from visualbert.errors import run_command
from visualbert.inference import add_engine_arg

__all__ = ["create_app", "build_parser", "main", "FIELDS", "encode_multipart"]

FIELDS = ("image", "question", "top_k", "explain")
MAX_TOP_K = 20


class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _parse_multipart(content_type, body):
    """{field: (filename or None, bytes)} of a multipart/form-data body (the stdlib's MIME parser)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body)
    if not message.is_multipart():
        raise BadRequest(400, "the body is not valid multipart/form-data")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise BadRequest(400, "a form part has no field name")
        if name not in FIELDS:
            raise BadRequest(400, f"unknown field '{name}' (expected: {', '.join(FIELDS)})")
        if name in fields:
            raise BadRequest(400, f"field '{name}' given twice")
        fields[name] = (part.get_filename(), part.get_payload(decode=True) or b"")
    return fields


def encode_multipart(fields):
    """(content type, body) of a multipart/form-data request, for clients of ``POST /v1/vqa`` (tests,
    benchmarks): ``fields`` maps a name to text, or to ``(filename, bytes)`` for a file."""
    boundary = "visualbert-" + base64.b16encode(os.urandom(12)).decode("ascii")
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data = value
            head = (f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n")
        else:
            head, data = f'Content-Disposition: form-data; name="{name}"\r\n\r\n', str(value).encode("utf-8")
        parts.append(f"--{boundary}\r\n".encode() + head.encode("utf-8") + data + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def _checked_image(data, max_pixels):
    """The uploaded bytes as a PIL RGB image, its size checked from the header before decoding."""
    from PIL import Image

    if not data:
        raise BadRequest(400, "field 'image' is empty")
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise BadRequest(413, f"image is {width} x {height} = {width * height / 1e6:.1f} megapixels; the "
                                      f"limit is {max_pixels / 1e6:g}")
            return im.convert("RGB")
    except BadRequest:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadRequest(400, f"field 'image' is not a readable image ({type(e).__name__})") from None


def _checked_fields(fields, max_question_chars, max_pixels):
    if "image" not in fields:
        raise BadRequest(400, "missing field 'image' (the image file)")
    if "question" not in fields:
        raise BadRequest(400, "missing field 'question'")
    try:
        question = fields["question"][1].decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadRequest(400, "field 'question' is not UTF-8 text") from None
    if not question:
        raise BadRequest(400, "field 'question' is empty")
    if len(question) > max_question_chars:
        raise BadRequest(400, f"field 'question' has {len(question)} characters; the limit is {max_question_chars}")
    top_k = 5
    if "top_k" in fields:
        text = fields["top_k"][1].decode("utf-8", "replace").strip()
        if not text.isdigit() or not 1 <= int(text) <= MAX_TOP_K:
            raise BadRequest(400, f"field 'top_k' must be an integer in [1, {MAX_TOP_K}], got {text!r}")
        top_k = int(text)
    explain = fields.get("explain", (None, b"0"))[1].strip() in (b"1", b"true", b"on")
    return _checked_image(fields["image"][1], max_pixels), question, top_k, explain


def create_app(pipe, max_upload_bytes=20 << 20, max_pixels=50_000_000, max_question_chars=500):
    """The FastAPI app over a loaded ``visualbert.pipelines.VisualQuestionAnswering``."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.concurrency import run_in_threadpool

    from . import provenance

    app = FastAPI(title="VisualBERT", docs_url=None, redoc_url=None, openapi_url=None)
    model_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
    from .serve_page import PAGE

    def answer(image, question, top_k, explain):
        (item,) = pipe.answer([(image, question)], top_k=top_k, explain=explain)
        out = {"question": question, "answers": item["answers"]}
        if explain:
            from .explain import render_png

            png = render_png(image, item["geometry"], item["attention"], question, item["answers"])
            out["explain_png"] = base64.b64encode(png).decode("ascii")
        return out

    async def read_body(request):
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise BadRequest(400, "Content-Length is not a number")
            if int(length) > max_upload_bytes:
                raise BadRequest(413, f"upload is {int(length) / 2**20:.1f} MB; the limit is {max_upload_bytes / 2**20:g} MB")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_upload_bytes:
                raise BadRequest(413, f"upload is over the limit of {max_upload_bytes / 2**20:g} MB")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return PAGE

    @app.get("/v1/health")
    async def health():
        return {"status": "ok", "model": pipe.model_dir, "features": provenance.describe(pipe.provenance)}

    @app.post("/v1/vqa")
    async def vqa(request: Request):
        try:
            content_type = request.headers.get("content-type", "")
            if not content_type.startswith("multipart/form-data"):
                raise BadRequest(415, "expected multipart/form-data with fields image and question")
            body = await read_body(request)
            fields = await run_in_threadpool(_parse_multipart, content_type, body)
            image, question, top_k, explain = await run_in_threadpool(_checked_fields, fields, max_question_chars,
                                                                      max_pixels)
        except BadRequest as e:
            # the client may still be sending the refused body: close the connection rather than read it
            return JSONResponse({"error": str(e)}, status_code=e.status, headers={"Connection": "close"})
        result = await asyncio.wrap_future(model_thread.submit(answer, image, question, top_k, explain))
        return result

    app.state.model_thread = model_thread
    return app


def build_parser():
    p = argparse.ArgumentParser(prog="python -m visualbert.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    from .cli import positive_int

    p.add_argument("--model", required=True, help="a trained VQA model: RUN/best, RUN/model, a checkpoint, or RUN")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one, printed at start)")
    p.add_argument("--weights", default=None, metavar="FILE.pdparams",
                   help="the backbone weights the features were made with, when they moved since extraction")
    p.add_argument("--max_upload_mb", type=positive_int, default=20, help="largest upload accepted (default 20 MB)")
    p.add_argument("--max_megapixels", type=positive_int, default=50, help="largest image accepted (default 50)")
    p.add_argument("--max_question_chars", type=positive_int, default=500,
                   help="longest question accepted (default 500 characters)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="where the model runs (default cpu)")
    add_engine_arg(p)
    return p


def main(argv=None):
    quiet.silence()
    args = build_parser().parse_args(argv)
    import uvicorn

    from .pipelines import FeaturesUnavailable, pipeline

    pipe = None

    def load():
        nonlocal pipe
        try:
            pipe = pipeline("visual-question-answering", args.model, device=args.device, weights=args.weights,
                            engine=args.engine)
            pipe.check_reproducible()
        except FeaturesUnavailable as e:
            raise SystemExit(f"error: {e}; the web page needs a model whose features can be made from an uploaded "
                             "image") from None

    status = run_command(load)
    if status:
        return status
    app = create_app(pipe, max_upload_bytes=args.max_upload_mb << 20, max_pixels=args.max_megapixels * 1_000_000,
                     max_question_chars=args.max_question_chars)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port} ({e.strerror or e})", file=sys.stderr)
        return 1
    sock.listen(128)  # listening before the line below: a client that reads it may connect at once
    host, port = sock.getsockname()[:2]
    print(f"serving {args.model} on http://{host}:{port}/ (Ctrl-C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    server.run(sockets=[sock])
    app.state.model_thread.shutdown(wait=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
