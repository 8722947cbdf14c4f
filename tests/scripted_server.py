"""A small OpenAI-compatible HTTP server whose every answer the test scripts: for fault tests of verify_lib.Judge and
for exact reward values. It is a real server on a loopback port, spoken to over real HTTP."""
import http.server
import json
import re
import threading
import time


def chat_reply(content, finish_reason="stop", reasoning=None):
    message = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message,
                                                                 "finish_reason": finish_reason}]}


class _Server(http.server.ThreadingHTTPServer):
    request_queue_size = 128   # the listen backlog: socketserver's 5 makes a burst of new connections wait 1 s each


class ScriptedServer:
    """`respond(prompt, n)` gets the judge prompt and the request's number (0-based) and returns one of:
    (status, body_dict_or_text[, headers]) or ("hang", seconds). Counts requests and the most seen in flight; GET
    /v1/models lists `models`."""

    def __init__(self, respond, models=("judge", "policy", "scripted")):
        self.respond = respond
        self.requests = 0
        self.in_flight = self.max_in_flight = 0
        self.prompts, self.bodies, self.auth = [], [], []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):                   # /v1/models: what ChatClient.check asks
                data = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in models]})
                self.send_response(200 if self.path.endswith("/models") else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data.encode())))
                self.end_headers()
                self.wfile.write(data.encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with server._lock:
                    n = server.requests
                    server.requests += 1
                    server.prompts.append(prompt)
                    server.bodies.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    action = server.respond(prompt, n)
                    if action[0] == "hang":
                        time.sleep(action[1])
                        action = (200, chat_reply("[[1]]"))
                    status, payload, headers = (*action, {})[:3]
                    data = payload if isinstance(payload, str) else json.dumps(payload)
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data.encode())))
                    self.end_headers()
                    self.wfile.write(data.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server._lock:
                        server.in_flight -= 1

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def quoted_response(prompt):
    """The response text that verify_lib.judge_prompt quoted into `prompt`."""
    return re.search(r"<response>\n(.*)\n</response>", prompt, flags=re.S).group(1)
