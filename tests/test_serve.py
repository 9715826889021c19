"""python -m visualbert.serve: the JSON API, bad requests, a bounded load test, and the page in a
real headless browser (Debian's chromium + chromedriver)."""
import concurrent.futures
import json
import os
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import ROOT, run_script
from webdriver import Browser, find_browser

from visualbert import pipeline
from visualbert.serve import encode_multipart

pytestmark = pytest.mark.slow  # a server and a browser in subprocesses, over a model trained in subprocesses


@pytest.fixture(scope="module")
def server(shapes_vqa):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.Popen([sys.executable, "-m", "visualbert.serve", "--model", str(shapes_vqa["model"]),
                             "--port", "0", "--max_upload_mb", "2"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    if "http://127.0.0.1:" not in line:
        proc.kill()
        raise AssertionError(f"server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    url = line.split(" on ")[1].split()[0].rstrip("/")
    yield url
    proc.terminate()
    proc.wait(timeout=20)


def post(url, fields, timeout=60):
    """(status, JSON body) of POST /v1/vqa with multipart ``fields``."""
    content_type, body = encode_multipart(fields)
    request = urllib.request.Request(url + "/v1/vqa", data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def image_bytes(shapes_vqa, image_id):
    return (f"shape_{image_id}.png", (shapes_vqa["images"] / f"shape_{image_id}.png").read_bytes())


def test_health_and_answers_equal_the_pipeline(server, shapes_vqa):
    with urllib.request.urlopen(server + "/v1/health", timeout=30) as r:
        health = json.loads(r.read())
    assert health["status"] == "ok" and "patches" in health["features"]
    status, body = post(server, {"image": image_bytes(shapes_vqa, 50004), "question": "what color is the shape?",
                                 "top_k": "3", "explain": "1"})
    assert status == 200
    want = pipeline("vqa", str(shapes_vqa["model"]))(image=str(shapes_vqa["images"] / "shape_50004.png"),
                                                      question="what color is the shape?", top_k=3)
    assert [a["answer"] for a in body["answers"]] == [a["answer"] for a in want]
    np.testing.assert_allclose([a["score"] for a in body["answers"]], [a["score"] for a in want], rtol=1e-5)
    assert body["explain_png"].startswith("iVBORw0KGgo")  # base64 of the PNG signature


def test_bad_requests_get_one_clear_4xx_and_the_server_stays_up(server, shapes_vqa, tmp_path):
    from PIL import Image

    good = image_bytes(shapes_vqa, 50001)
    big = tmp_path / "big.png"
    Image.new("RGB", (8000, 7000)).save(big)  # 56 megapixels, a small file
    cases = [
        ({"image": ("notes.txt", b"just some text"), "question": "what?"}, 400, "not a readable image"),
        ({"image": ("big.png", big.read_bytes()), "question": "what?"}, 413, "56.0 megapixels; the limit is 50"),
        ({"image": good, "question": "   "}, 400, "field 'question' is empty"),
        ({"image": good, "question": "why " * 2500}, 400, "has 9999 characters; the limit is 500"),
        ({"picture": good, "question": "what?"}, 400, "unknown field 'picture'"),
        ({"question": "what?"}, 400, "missing field 'image'"),
        ({"image": good, "question": "what?", "top_k": "0"}, 400, "'top_k' must be an integer in [1, 20]"),
    ]
    for fields, status, message in cases:
        got, body = post(server, fields)
        assert got == status and message in body["error"] and "\n" not in body["error"], (fields.keys(), body)
    request = urllib.request.Request(server + "/v1/vqa", data=b"question=what", method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 415
    assert post(server, {"image": good, "question": "what shape is in the picture?"})[0] == 200


def test_upload_over_the_limit_is_refused_before_its_body_is_sent(server):
    host, port = server[len("http://"):].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /v1/vqa HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                  b"Content-Length: 1000000000\r\n\r\n")  # 1 GB promised, nothing sent
        reply = b""
        while chunk := s.recv(4096):  # the server answers at once and closes the connection
            reply += chunk
    reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413") and "connection: close" in reply.lower()
    assert json.loads(reply.split("\r\n\r\n", 1)[1]) == {"error": "upload is 953.7 MB; the limit is 2 MB"}


def test_load_200_requests_from_8_clients_all_answered_right(server, shapes_vqa):
    questions = ["what shape is in the picture?", "what color is the shape?", "is there a circle?"]
    ids = list(range(50001, 50009))
    vqa = pipeline("vqa", str(shapes_vqa["model"]))
    want = {(i, q): vqa(image=str(shapes_vqa["images"] / f"shape_{i}.png"), question=q, top_k=1)[0]["answer"]
            for i in ids for q in questions}
    jobs = [(ids[k % len(ids)], questions[k % len(questions)]) for k in range(200)]

    def one(job):
        start = time.perf_counter()
        status, body = post(server, {"image": image_bytes(shapes_vqa, job[0]), "question": job[1], "top_k": "1"})
        return job, status, body, time.perf_counter() - start

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, jobs))
    wall = time.perf_counter() - start
    assert all(status == 200 for _, status, _, _ in results)
    assert all(body["answers"][0]["answer"] == want[job] for job, _, body, _ in results)
    assert wall < 120, wall


def test_page_in_a_headless_browser_shows_asks_answer(server, shapes_vqa, tmp_path):
    found = find_browser()
    assert found, "the page test needs Debian's chromium and chromedriver: apt-get install -y chromium chromium-driver"
    image = shapes_vqa["images"] / "shape_50006.png"
    question = "what shape is in the picture?"
    asked = json.loads(run_script(["-m", "visualbert.ask", "--model", str(shapes_vqa["model"]), "--image", str(image),
                                   "--question", question, "--json"]).stdout)["results"][0]["answers"]
    browser = Browser(*found, log_path=tmp_path / "chromedriver.log")
    try:
        browser.open(server + "/")
        browser.type(browser.find("#image"), str(image))
        browser.type(browser.find("#question"), question)
        browser.click(browser.find("#ask"))
        top = browser.find("#top-answer")
        deadline = time.time() + 60
        while not browser.text(top) and time.time() < deadline:
            time.sleep(0.3)
        shown = browser.text(top)
        rows = [browser.text(r) for r in browser.find_all("#answers .answer")]
        explain_shown = browser.displayed(browser.find("#explain"))
        time.sleep(0.5)  # the explain picture's decode, for the screenshot
        shot = browser.screenshot(tmp_path / "page.png")
    finally:
        browser.close()
    assert shown == asked[0]["answer"], browser.text
    assert len(rows) == 5 and rows[0].split()[0] == asked[0]["answer"]
    assert explain_shown
    assert os.path.getsize(shot) > 10_000
    print(f"screenshot: {shot}")
