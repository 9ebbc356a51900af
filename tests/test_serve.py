"""The REST API through FastAPI's TestClient, and one real `fakeface serve` process over HTTP."""

from __future__ import annotations

import http.client
import io
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from conftest import noise_image
from fakeface.checkpoint import load_checkpoint, save_atomic
from fakeface.detector import Detector
from fakeface.images import DEFAULT_MAX_PIXELS
from fakeface.serve import DETECT_FACES_DEFAULT, ServeConfig, create_app, is_loopback
from test_data import _png_bomb

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tiny_run):
    return tiny_run[1]


def jpeg_bytes(seed=0, size=100, mode="RGB", fmt="JPEG") -> bytes:
    buf = io.BytesIO()
    noise_image(seed, size, mode).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(checkpoint):
    app = create_app(ServeConfig(checkpoint=str(checkpoint), max_upload_bytes=200_000, precision="fp32"))
    with TestClient(app) as c:
        yield c


def test_health_and_model(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["architecture"] == "inception_resnet_v1" and info["input_size"] == 80
    assert info["threshold"] == 0.5 and info["positive_class"] == "fake" and info["training"]["epoch"] == 1


def test_predict_matches_the_library(client, checkpoint):
    data = jpeg_bytes(3)
    r = client.post("/v1/predict?detect_faces=false", files={"file": ("face.jpg", data, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = Detector(checkpoint, precision="fp32").predict([Image.open(io.BytesIO(data)).convert("RGB")])[0]
    assert body["p_fake"] == pytest.approx(float(expected), abs=1e-5)
    assert body["verdict"] == ("fake" if body["p_fake"] >= 0.5 else "real")
    assert body["faces"][0]["whole_image"] is True and body["image"] == {"width": 100, "height": 100}


@pytest.mark.parametrize("payload,status,code", [
    (b"", 400, "empty_upload"),
    (b"hello, I am text", 415, "not_an_image"),
    (jpeg_bytes(1)[:300], 400, "unreadable_image"),
    (b"\x00" * 300_000, 413, "upload_too_large"),
])
def test_bad_uploads_get_stable_json_errors(client, payload, status, code):
    r = client.post("/v1/predict", files={"file": ("x.jpg", payload, "image/jpeg")})
    assert r.status_code == status
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200  # still serving


def test_decompression_bomb_refused_before_decoding(client, tmp_path):
    _png_bomb(tmp_path / "bomb.png")
    r = client.post("/v1/predict", files={"file": ("bomb.png", (tmp_path / "bomb.png").read_bytes(), "image/png")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"
    assert r.json()["error"]["message"] == f"image too large: 10,000,000,000 pixels (limit {DEFAULT_MAX_PIXELS:,})"


def test_a_thin_strip_is_refused_before_it_is_scaled(client):
    strip = io.BytesIO()
    Image.new("RGB", (400_000, 1)).save(strip, format="PNG")  # 400k pixels that scale to 256 x 102,400,000
    r = client.post("/v1/predict", files={"file": ("strip.png", strip.getvalue(), "image/png")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"
    assert "400000x1" in r.json()["error"]["message"]
    assert client.get("/healthz").status_code == 200


def test_missing_file_field_is_422(client):
    r = client.post("/v1/predict", data={"nothing": "here"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_requests_the_api_cannot_take_get_one_clear_error(client):
    good, bad = jpeg_bytes(2), b"not a picture"
    two = [("file", ("a.jpg", good)), ("file", ("b.jpg", bad))]
    for files in (two, two[::-1]):
        r = client.post("/v1/predict", files=files)  # neither the last nor the first may silently win
        assert (r.status_code, r.json()["error"]["code"]) == (400, "one_file_per_request")
    for r in (client.post("/v1/predict", data={"file": "hello"}),  # a text field, not a file
              client.post("/v1/predict", content=good, headers={"content-type": "image/jpeg"})):  # not multipart
        assert r.status_code == 422 and "multipart/form-data" in r.json()["error"]["message"]

    def chunks():  # a file sent without a Content-Length: counted as it streams in
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        yield from [b"\0" * 50_000] * 20
    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert r.request.headers.get("content-length") is None
    assert (r.status_code, r.json()["error"]["code"]) == (413, "upload_too_large")

    r = client.delete("/v1/model")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "HEAD"} and r.json()["error"]
    assert client.head("/healthz").status_code == 200


def test_face_search_on_a_thin_image_finds_no_face(client):
    buf = io.BytesIO()
    noise_image(0, 64).resize((1, 25)).save(buf, format="PNG")  # shrunk for the search: 0 px wide before
    r = client.post("/v1/predict?detect_faces=true", files={"file": ("thin.png", buf.getvalue())})
    assert r.status_code == 200 and r.json()["faces_found"] == 0 and r.json()["faces"] == []
    assert r.json()["verdict"] == "no_face" and r.json()["p_fake"] is None
    r = client.post("/v1/predict?detect_faces=true&whole_image_if_no_face=true",
                    files={"file": ("thin.png", buf.getvalue())})
    assert r.status_code == 200 and r.json()["faces_found"] == 0 and r.json()["faces"][0]["whole_image"]


def blank_png(size=(400, 300)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (245, 245, 240)).save(buf, format="PNG")
    return buf.getvalue()


def test_no_face_found_is_said_not_scored_unless_the_whole_image_is_asked_for(client, checkpoint):
    r = client.post("/v1/predict?detect_faces=true", files={"file": ("blank.png", blank_png())})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["verdict"], body["p_fake"], body["faces"], body["faces_found"]) == ("no_face", None, [], 0)
    assert body["face_detection"] == "no face found" and body["image"] == {"width": 400, "height": 300}

    r = client.post("/v1/predict?detect_faces=true&whole_image_if_no_face=true",
                    files={"file": ("blank.png", blank_png())})
    body = r.json()
    expected = Detector(checkpoint, precision="fp32").predict([Image.open(io.BytesIO(blank_png())).convert("RGB")])[0]
    assert r.status_code == 200 and body["faces_found"] == 0 and body["verdict"] in ("real", "fake")
    assert body["p_fake"] == pytest.approx(float(expected), abs=1e-5)
    assert body["faces"] == [{"box": [0, 0, 400, 300], "crop": [0, 0, 400, 300], "p_fake": body["p_fake"],
                              "verdict": body["verdict"], "whole_image": True, "realigned": False}]
    assert body["face_detection"] == "no face found: the whole image was scored instead"


def test_a_found_face_is_described_by_its_aligned_square(client, sample_root):
    face = Image.open(next((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "real").glob("*.jpg")))
    scene = Image.new("RGB", (640, 480), (200, 190, 180))
    scene.paste(face.convert("RGB").resize((200, 200)), (300, 140))
    buf = io.BytesIO()
    scene.save(buf, format="PNG")
    body = client.post("/v1/predict?detect_faces=true", files={"file": ("scene.png", buf.getvalue())}).json()
    assert body["faces_found"] == 1 and body["face_detection"].startswith("1 face(s) found")
    (row,) = body["faces"]
    assert row["whole_image"] is False and 0.9 <= row["score"] <= 1 and len(row["landmarks"]) == 5
    quad = np.array(row["quad"])
    assert quad.shape == (4, 2) and np.abs(quad.mean(0) - [400, 240]).max() < 20  # centred on the pasted face
    assert body["p_fake"] == row["p_fake"] and body["verdict"] == row["verdict"] in ("real", "fake")
    assert row["realigned"] is True


def test_an_upload_that_already_is_an_aligned_face_is_scored_as_it_is(client, sample_root):
    data = next((sample_root / "real_vs_fake" / "real-vs-fake" / "test" / "fake").glob("*.jpg")).read_bytes()
    found = client.post("/v1/predict", files={"file": ("face.jpg", data, "image/jpeg")}).json()
    whole = client.post("/v1/predict?detect_faces=false", files={"file": ("face.jpg", data, "image/jpeg")}).json()
    (row,) = found["faces"]
    assert row["realigned"] is False and row["whole_image"] is False and row["crop"] == [0, 0, 256, 256]
    assert found["p_fake"] == pytest.approx(whole["p_fake"], abs=1e-6) and whole["faces"][0]["realigned"] is False


def test_face_finding_gets_one_torch_thread_a_request_beside_an_onnx_model(checkpoint, tmp_path):
    def threads_of_a_new_thread() -> int:  # what a request's worker thread starts PyTorch with
        seen = []
        worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        worker.start()
        worker.join()
        return seen[0]

    shutil.copy(checkpoint, tmp_path / "best.pt")  # its ONNX export is made beside it
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for precision, backend, threads in (("fp32", "pytorch", 2), ("auto", "onnx", 1)):
            config = ServeConfig(checkpoint=str(tmp_path / "best.pt"), precision=precision)
            with TestClient(create_app(config)) as c:
                assert c.get("/v1/model").json()["backend"] == backend
                assert threads_of_a_new_thread() == threads  # PyTorch scoring the model keeps its threads
            assert threads_of_a_new_thread() == 2  # given back when the server stops
    finally:
        torch.set_num_threads(before)


def test_the_face_detector_is_built_on_first_use_and_a_missing_one_is_a_503(checkpoint, tmp_path):
    from fakeface.faces import FaceDetector

    missing = tmp_path / "no-such-mtcnn.safetensors"
    app = create_app(ServeConfig(checkpoint=str(checkpoint), precision="fp32", face_weights=str(missing)))
    with TestClient(app) as c:
        assert app.state.faces.detector is None and app.state.faces.error is None  # not built at start-up
        assert c.post("/v1/predict?detect_faces=false", files={"file": ("a.jpg", jpeg_bytes(1))}).status_code == 200
        for _ in range(2):  # answered the same way each time, and the server goes on
            r = c.post("/v1/predict?detect_faces=true", files={"file": ("a.jpg", jpeg_bytes(1))})
            assert r.status_code == 503 and set(r.json()) == {"error"}
            assert r.json()["error"]["code"] == "face_detector_unavailable"
            assert "detect_faces=false" in r.json()["error"]["message"]
            assert str(missing) not in r.json()["error"]["message"]  # the server's paths stay in its log
        assert c.post("/v1/predict?detect_faces=false", files={"file": ("a.jpg", jpeg_bytes(1))}).status_code == 200
        assert c.get("/healthz").json() == {"status": "ok"}

    app = create_app(ServeConfig(checkpoint=str(checkpoint), precision="fp32"))
    with TestClient(app) as c:
        c.post("/v1/predict?detect_faces=false", files={"file": ("a.jpg", jpeg_bytes(1))})
        assert app.state.faces.detector is None  # never asked for faces: never built
        assert c.post("/v1/predict?detect_faces=true", files={"file": ("b.png", blank_png())}).status_code == 200
        assert isinstance(app.state.faces.detector, FaceDetector)


def test_model_info_names_the_release_and_synthetic_data(client, checkpoint, tmp_path):
    info = client.get("/v1/model").json()
    assert info["release"] is None and info["data_kind"] is None  # a run's own checkpoint, trained on faces
    ckpt = {k: v for k, v in load_checkpoint(checkpoint).items() if k != "path"}
    ckpt["data_kind"] = "synthetic"
    ckpt["release"] = {"name": "fakeface-test", "version": 0.1, "provisional": True, "note": "a stand-in"}
    save_atomic(ckpt, tmp_path / "best.pt")
    with TestClient(create_app(ServeConfig(checkpoint=str(tmp_path / "best.pt"), precision="fp32"))) as c:
        info = c.get("/v1/model").json()
    assert info["data_kind"] == "synthetic"
    assert info["release"] == {"name": "fakeface-test", "version": "0.1", "provisional": True, "note": "a stand-in"}


def test_an_unexpected_failure_is_a_json_500_and_the_server_goes_on(checkpoint, monkeypatch):
    from fakeface.faces import FaceDetector

    def broken(self, img):
        raise RuntimeError("boom")
    app = create_app(ServeConfig(checkpoint=str(checkpoint), precision="fp32"))
    with TestClient(app, raise_server_exceptions=False) as c:
        monkeypatch.setattr(FaceDetector, "detect", broken)
        r = c.post("/v1/predict?detect_faces=true", files={"file": ("a.jpg", jpeg_bytes(1))})
        assert r.status_code == 500 and r.json()["error"] == {
            "code": "internal_error", "message": "the server failed on this request (RuntimeError); it is logged"}
        assert c.post("/v1/predict?detect_faces=false", files={"file": ("a.jpg", jpeg_bytes(1))}).status_code == 200


def test_api_key_is_required_when_set(checkpoint):
    app = create_app(ServeConfig(checkpoint=str(checkpoint), api_key="s3cret", precision="fp32"))
    with TestClient(app) as c:
        assert c.get("/v1/model").status_code == 401
        assert c.get("/v1/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200


def test_concurrent_requests_are_batched(checkpoint):
    import concurrent.futures

    app = create_app(ServeConfig(checkpoint=str(checkpoint), precision="fp32", max_wait_ms=50))
    with TestClient(app) as c:
        payloads = [jpeg_bytes(i) for i in range(12)]
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda d: c.post("/v1/predict?detect_faces=false", files={"file": ("a.jpg", d)}),
                                    payloads))
        assert all(r.status_code == 200 for r in results)
        probs = [r.json()["p_fake"] for r in results]
        assert len(set(np.round(probs, 6))) > 1  # each request got its own answer
        assert app.state.batcher.batches < 12  # some requests shared a model call


def test_web_page_is_self_contained(client):
    html = client.get("/").text
    assert "<title>fakeface" in html and "/v1/predict" in html
    box = re.search(r'<input id="faces" type="checkbox" ?([a-z-]*)>', html)
    assert box and box.group(1) == ("checked" if DETECT_FACES_DEFAULT else "")  # the page finds faces as the API does
    assert "http://" not in html and "https://" not in html  # no CDN: works offline


def test_openapi_docs(client):
    spec = client.get("/openapi.json").json()
    assert "/v1/predict" in spec["paths"] and client.get("/docs").status_code == 200


def test_non_loopback_needs_a_key_or_insecure(checkpoint):
    from fakeface.serve import serve

    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    with pytest.raises(ValueError, match="--insecure"):
        serve(ServeConfig(checkpoint=str(checkpoint)), host="0.0.0.0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart(payload: bytes, field: str = "file") -> tuple[bytes, dict]:
    boundary = "fakefaceboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    body = head + payload + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _call(url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def test_real_server_over_http(checkpoint, tmp_path):
    import os
    import shutil

    # serve makes an ONNX export beside the checkpoint it is given: a copy, so the shared run stays as it is
    (tmp_path / "run").mkdir()
    checkpoint = shutil.copy(checkpoint, tmp_path / "run" / "best.pt")

    port = free_port()
    env = {**os.environ, "FAKEFACE_API_KEY": "k3y"}
    proc = subprocess.Popen([sys.executable, "-m", "fakeface", "serve", "--checkpoint", str(checkpoint),
                             "--port", str(port), "--max-upload-mb", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    key = {"Authorization": "Bearer k3y"}
    try:
        deadline = time.time() + 120
        while True:
            try:
                if json.load(urllib.request.urlopen(f"{base}/healthz", timeout=2))["status"] == "ok":
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert proc.poll() is None and time.time() < deadline, "server did not start"
            time.sleep(0.3)
        assert _call(f"{base}/v1/model")[0] == 401
        assert _call(f"{base}/v1/model", headers={"Authorization": "Bearer nope"})[0] == 401
        assert _call(f"{base}/v1/model", headers=key)[0] == 200

        body, form = _multipart(jpeg_bytes(5, fmt="PNG"))
        status, out = _call(f"{base}/v1/predict?detect_faces=false", body, {**form, **key})
        assert status == 200 and 0 <= out["p_fake"] <= 1 and out["verdict"] in ("real", "fake")

        _png_bomb(tmp_path / "bomb.png")
        bad_inputs = {
            "empty": (b"", 400, "empty_upload"),
            "text": (b"just some text, not a picture", 415, "not_an_image"),
            "truncated": (jpeg_bytes(5, fmt="PNG")[:120], 400, "unreadable_image"),
            "oversized": (b"\x00" * 300_000, 413, "upload_too_large"),
            "bomb": ((tmp_path / "bomb.png").read_bytes(), 413, "image_too_large"),
        }
        for name, (payload, want_status, want_code) in bad_inputs.items():
            body, form = _multipart(payload)
            status, out = _call(f"{base}/v1/predict?detect_faces=false", body, {**form, **key})
            assert (status, out["error"]["code"]) == (want_status, want_code), name
        # no Content-Length: a file in 64 KB chunks, just past the limit (more, and the server's close may reset
        # the connection before the client reads the answer)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        head = _multipart(b"")[0].split(b"\r\n--fakefaceboundary--")[0]
        conn.request("POST", "/v1/predict", body=iter([head] + [b"\0" * 65536] * 5), encode_chunked=True,
                     headers={**form, **key})
        answer = conn.getresponse()
        assert (answer.status, json.load(answer)["error"]["code"]) == (413, "upload_too_large")
        conn.close()
        body, form = _multipart(jpeg_bytes(5), field="picture")
        assert _call(f"{base}/v1/predict", body, {**form, **key})[0] == 422  # no "file" field
        body, form = _multipart(jpeg_bytes(5))
        assert _call(f"{base}/v1/predict?detect_faces=perhaps", body, {**form, **key})[0] == 422
        assert json.load(urllib.request.urlopen(f"{base}/healthz", timeout=5))["status"] == "ok"  # still serving
        assert _call(f"{base}/v1/predict?detect_faces=false", body, {**form, **key})[0] == 200
    finally:
        proc.terminate()
        logs = proc.communicate(timeout=30)[0]
    assert "\\x89PNG" not in logs and "IHDR" not in logs and "JFIF" not in logs  # no image bytes in the logs
    assert "POST /v1/predict" in logs  # the access log is there, just without bodies
    made = tmp_path / "run" / "best.onnx"
    assert f"made {made}," in logs and made.is_file()  # fast by default


def test_serve_refuses_what_it_cannot_start_with_one_line(checkpoint, tmp_path):
    (tmp_path / "text.pt").write_text("not a checkpoint")
    (tmp_path / "empty.pt").write_bytes(b"")
    cases = {"not a PyTorch checkpoint": ["--checkpoint", tmp_path / "text.pt"],
             "(an empty file)": ["--checkpoint", tmp_path / "empty.pt"],
             "port must be 0-65535": ["--checkpoint", checkpoint, "--port", "99999"],
             f"--keep-uploads {tmp_path / 'text.pt'}: cannot write there": [
                 "--checkpoint", checkpoint, "--keep-uploads", tmp_path / "text.pt"],  # a file, not a folder
             "a micro-batch needs at least 1 image": ["--checkpoint", checkpoint, "--max-batch", "0"]}
    for reason, args in cases.items():
        res = subprocess.run([sys.executable, "-m", "fakeface", "serve", *map(str, args)], capture_output=True,
                             text=True, timeout=120)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (args, res.stderr)
        assert res.stderr.strip().startswith("error:") and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert reason in res.stderr and "weights_only" not in res.stderr, res.stderr
    for limit in ("-1", "nan"):  # a usage error, from the option's own range
        res = subprocess.run([sys.executable, "-m", "fakeface", "serve", "--checkpoint", str(checkpoint),
                              "--max-upload-mb", limit], capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "--max-upload-mb" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_cors_only_when_configured_and_uploads_kept_only_when_asked(checkpoint, tmp_path):
    origin = {"Origin": "https://reviewer.example"}
    plain = create_app(ServeConfig(checkpoint=str(checkpoint), precision="fp32"))
    with TestClient(plain) as c:
        r = c.post("/v1/predict", files={"file": ("a.jpg", jpeg_bytes(1))}, headers=origin)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert not any(tmp_path.iterdir())  # nothing was written anywhere we can see

    keep = tmp_path / "kept"
    app = create_app(ServeConfig(checkpoint=str(checkpoint), precision="fp32", keep_uploads=str(keep),
                                 cors_origins=["https://reviewer.example"]))
    with TestClient(app) as c:
        data = jpeg_bytes(2)
        r = c.post("/v1/predict", files={"file": ("a.jpg", data)}, headers=origin)
        assert r.headers["access-control-allow-origin"] == "https://reviewer.example"
    assert [p.read_bytes() for p in keep.iterdir()] == [data]


def test_openapi_describes_every_answer_once(client):
    """A generated client needs unique operation ids, a schema for each answer and the errors documented."""
    spec = client.get("/openapi.json").json()
    ids = [op["operationId"] for methods in spec["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids)), ids
    answers = spec["paths"]["/v1/predict"]["post"]["responses"]
    assert answers["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PredictResponse"}
    assert "face_detector_unavailable" in answers["503"]["description"]
    query = {p["name"]: p for p in spec["paths"]["/v1/predict"]["post"]["parameters"]}
    assert query["detect_faces"]["schema"]["default"] is DETECT_FACES_DEFAULT
    assert query["whole_image_if_no_face"]["schema"]["default"] is False
    for status in ("400", "401", "413", "415", "422", "503"):
        assert answers[status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse"), status
    assert "ModelInfo" in spec["paths"]["/v1/model"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"]["$ref"]
    assert client.head("/healthz").status_code == 200 and client.head("/v1/model").status_code == 200


def test_model_info_says_one_input_size(checkpoint, tmp_path):
    ckpt = {k: v for k, v in load_checkpoint(checkpoint).items() if k != "path"}
    ckpt["preprocess"] = {**ckpt["preprocess"], "input_size": 96, "eval_size": 80}  # trained at 96, scores at 80
    save_atomic(ckpt, tmp_path / "best.pt")
    with TestClient(create_app(ServeConfig(checkpoint=str(tmp_path / "best.pt"), precision="fp32"))) as c:
        info = c.get("/v1/model").json()
    assert info["input_size"] == info["preprocess"]["input_size"] == 80
    assert info["preprocess"]["training_crop_size"] == 96 and info["backend"] == "pytorch"


def test_a_port_in_use_is_one_line(checkpoint):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = subprocess.run([sys.executable, "-m", "fakeface", "serve", "--checkpoint", str(checkpoint), "--port",
                              str(port)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use: stop what runs there or choose another --port"]
