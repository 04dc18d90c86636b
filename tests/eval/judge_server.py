"""A local OpenAI-compatible chat-completions server that plays the video-QA judge, for tests.

It listens on 127.0.0.1 at an ephemeral port, in a background thread (stdlib ``http.server``)::

    with JudgeServer(fail_first=2, garble_every=5) as server:
        main(["--base-url", server.base_url, ...])
        assert len(server.requests) == ...

``POST /v1/chat/completions`` answers deterministically from the user message: ``{'pred': 'yes', 'score':
5}`` when the lower-cased text after ``Correct Answer:`` occurs in the ``Predicted Answer:`` line, else
``{'pred': 'no', 'score': 0}``; ``GET /v1/models`` lists the served model. The response's ``model`` is the
requested name plus ``-stub`` (or ``reported_model``). Faults, counted over POSTs in arrival order (1-based):

- ``fail_first=k`` / ``fail_every=K``: HTTP ``fail_status`` (500) for calls 1..k / every K-th call;
- ``garble_first=k`` / ``garble_every=K``: a reply that is not a dict literal;
- ``float_scores``: scores 4.8 (yes) and 0.6 (no) instead of 5 and 0; ``score_text``: scores as strings;
- ``delay``: seconds to sleep before answering;
- ``api_key``: answer 401 unless ``Authorization: Bearer <api_key>`` is sent.

Every POST body (and its Authorization header) is kept in ``requests``, answered or not.

Run by hand: ``python tests/eval/judge_server.py [--port 0] [--fail-every K] ...`` prints the URL.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GARBLED = "Sure! I think the prediction matches the answer quite well."


def expected_reply(user: str, float_scores: bool = False, score_text: bool = False) -> str:
    """The stub's verdict on one user prompt, as the Python-dict text a judge returns."""
    answer = re.search(r"^Correct Answer: (.*)$", user, re.MULTILINE)
    pred = re.search(r"^Predicted Answer: (.*)$", user, re.MULTILINE)
    match = bool(answer and pred and answer.group(1).strip().lower() in pred.group(1).lower())
    score: Any = (4.8 if match else 0.6) if float_scores else (5 if match else 0)
    if score_text:
        score = str(score)
    return repr({"pred": "yes" if match else "no", "score": score})


@dataclass
class JudgeServer:
    """The stub judge; ``start()`` (or ``with``) binds it, ``base_url`` is then ``http://127.0.0.1:PORT/v1``."""

    fail_first: int = 0
    fail_every: int = 0
    fail_status: int = 500
    garble_first: int = 0
    garble_every: int = 0
    float_scores: bool = False
    score_text: bool = False
    delay: float = 0.0
    reported_model: str | None = None
    api_key: str | None = None
    port: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> JudgeServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def user_prompts(self) -> list[str]:
        """The user message of every POST received so far, in arrival order."""
        with self._lock:
            return [r["body"]["messages"][-1]["content"] for r in self.requests]

    def record(self, body: dict[str, Any], authorization: str | None) -> int:
        """Keeps one POST; returns its 1-based call number."""
        with self._lock:
            self.requests.append({"body": body, "authorization": authorization})
            return len(self.requests)

    def fault(self, call: int) -> str | None:
        """``"fail"``, ``"garble"`` or None for call number ``call``."""
        if call <= self.fail_first or (self.fail_every and call % self.fail_every == 0):
            return "fail"
        if call <= self.fail_first + self.garble_first or (
            self.garble_every and call % self.garble_every == 0
        ):
            return "garble"
        return None

    def completion(self, body: dict[str, Any], content: str) -> dict[str, Any]:
        model = self.reported_model or f"{body.get('model', 'judge')}-stub"
        return {
            "id": f"chatcmpl-stub-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }


def _handler(server: JudgeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
            pass

        def send_json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models":
                self.send_json(404, {"error": {"message": f"no route {self.path}"}})
                return
            model = server.reported_model or "judge-stub"
            self.send_json(200, {"object": "list", "data": [{"id": model, "object": "model"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            call = server.record(body, self.headers.get("Authorization"))
            if server.delay:
                time.sleep(server.delay)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self.send_json(404, {"error": {"message": f"no route {self.path}"}})
            elif server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                self.send_json(401, {"error": {"message": "bad key"}})
            elif server.fault(call) == "fail":
                self.send_json(server.fail_status, {"error": {"message": f"injected failure on call {call}"}})
            elif server.fault(call) == "garble":
                self.send_json(200, server.completion(body, GARBLED))
            else:
                user = body["messages"][-1]["content"]
                reply = expected_reply(user, server.float_scores, server.score_text)
                self.send_json(200, server.completion(body, reply))

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fail-every", type=int, default=0)
    parser.add_argument("--garble-every", type=int, default=0)
    parser.add_argument("--float-scores", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    server = JudgeServer(
        fail_every=args.fail_every,
        garble_every=args.garble_every,
        float_scores=args.float_scores,
        delay=args.delay,
        port=args.port,
    ).start()
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
