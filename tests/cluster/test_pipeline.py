"""The layers on a real Ray cluster (a head and worker nodes on 127.0.0.1, token authentication on): 2 and 3
stages agree with the resident model, a node killed mid-generation loses nothing, and the errors are clear."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from support.ray_nodes import LocalCluster
from support.serverprocs import assert_one_line_error, clean_env, netboot

from netboot.engine.generate import Generation
from netboot.engine.sampling import SamplingParams

pytestmark = [pytest.mark.ray, pytest.mark.slow]

LOGIT_BOUND = 2e-4  # relative to the largest logit: the engine's bound between batch shapes (test_scheduler)
PROMPT = "The three most important inventions of the twentieth century were"


@pytest.fixture(scope="module")
def cluster():
    c = LocalCluster(max_nodes=8)
    try:
        yield c.start(workers=3)
    finally:
        c.stop()


@pytest.fixture(scope="module")
def pipelines(cluster):
    from netboot.loader import load

    loaded = {n: load(None, cluster=cluster.address, stages=n) for n in (2, 3)}
    yield loaded
    for p in loaded.values():
        for s in p.model.stages:
            import ray

            ray.kill(s.actor)


def _greedy(model, tokenizer, n=24, prompt=PROMPT) -> str:
    ids = tokenizer.encode(prompt)
    return Generation(model, tokenizer, ids, max_tokens=n, params=SamplingParams(temperature=0)).text()


@pytest.mark.parametrize("stages", [2, 3])
def test_stages_split_the_layers_over_distinct_nodes(pipelines, stages):
    p = pipelines[stages].model
    assert [s.layers for s in p.stages][0].start == 0 and p.stages[-1].layers.stop == p.config.n_layers
    assert all(a.layers.stop == b.layers.start for a, b in zip(p.stages, p.stages[1:], strict=False))
    assert len({s.node.id for s in p.stages}) == stages
    text = pipelines[stages].explain()
    assert all(f"layers {s.layers.start}-{s.layers.stop - 1}" in text for s in p.stages)


@pytest.mark.parametrize("stages", [2, 3])
def test_logits_and_greedy_text_match_the_resident_model(pipelines, default_model, stages):
    p, tok = pipelines[stages].model, default_model.tokenizer
    ids = tok.encode(PROMPT)
    ours = p.forward(ids, p.new_cache(), 0)
    ref = default_model.model.forward(ids, default_model.model.new_cache(), 0)
    assert np.abs(ours - ref).max() <= LOGIT_BOUND * np.abs(ref).max()
    assert _greedy(p, tok) == _greedy(default_model.model, tok)


def test_a_batch_of_sessions_matches_the_resident_model(pipelines, default_model):
    p, m, tok = pipelines[2].model, default_model.model, default_model.tokenizer
    prompts = [tok.encode(PROMPT), tok.encode("Once upon a time")]
    ours = p.forward_batch([(ids, p.new_cache(), 0) for ids in prompts])
    ref = m.forward_batch([(ids, m.new_cache(), 0) for ids in prompts])
    assert np.abs(ours - ref).max() <= LOGIT_BOUND * np.abs(ref).max()


def test_ray_actor_calls_carry_the_same_steps_as_the_direct_path(pipelines, default_model):
    """The direct path (the stages' own connections) is the default; the fallback, Ray's chained actor calls,
    computes the same logits, and the two can follow each other within one session."""
    p, tok = pipelines[2].model, default_model.tokenizer
    ids = tok.encode(PROMPT)
    ref = default_model.model.forward(ids, default_model.model.new_cache(), 0)
    assert p.transport == "direct"
    cache = p.new_cache()
    p.forward(ids[:5], cache, 0)  # direct
    try:
        p.transport = "ray"
        continued = p.forward(ids[5:], cache, 5)
        whole = p.forward(ids, p.new_cache(), 0)
    finally:
        p.transport = "direct"
    direct = p.forward(ids, p.new_cache(), 0)
    assert np.array_equal(whole, direct)  # the same batch shapes: the same arithmetic
    for logits in (continued, whole):
        assert np.abs(logits - ref).max() <= LOGIT_BOUND * np.abs(ref).max()


def test_the_direct_path_refuses_a_connection_without_the_secret(pipelines, default_model):
    """A stage's port takes only connections that prove the pipeline's secret (which only Ray carried); a
    stranger is refused and the stage goes on serving the driver."""
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    p, tok = pipelines[2].model, default_model.tokenizer
    ids = tok.encode(PROMPT)
    before = p.forward(ids, p.new_cache(), 0)
    for address in p._path.addresses:
        with pytest.raises((AuthenticationError, EOFError, ConnectionError)):
            Client(tuple(address), authkey=b"not the secret").send_bytes(b"in")
    assert np.array_equal(p.forward(ids, p.new_cache(), 0), before)


def test_a_stage_never_serves_a_session_it_does_not_hold(pipelines):
    """What a restarted actor would do: asked to continue a session at position 5 with no cache, it refuses."""
    import ray

    stage = pipelines[2].model.stages[1]
    h = np.zeros((1, pipelines[2].model.config.dim), np.float32)
    with pytest.raises(ray.exceptions.RayTaskError, match="hold 0 positions of session nobody"):
        ray.get(stage.actor.run.remote(h, [("nobody", 5, 1)]))


def test_no_live_node_for_a_lost_range_is_a_clear_error(pipelines, monkeypatch):
    from netboot.cluster import pipeline as pipeline_module
    from netboot.cluster.nodes import ClusterError

    p = pipelines[2].model
    monkeypatch.setattr(pipeline_module, "live_nodes", lambda: [])
    with pytest.raises(ClusterError, match="no live node can take its layers"):
        p._start_replacement(p.stages[1], set(), "stage 1 (layers 9-17) stopped answering")


def test_a_wrong_token_is_refused_in_one_line(cluster):
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 32)
    r = netboot("run", "-p", "hi", "-n", "2", "--cluster", cluster.address, env=env, timeout=120)
    assert_one_line_error(r, "refused this program's token", cluster.address)


def test_the_api_serves_concurrent_clients_from_the_stages(cluster, default_model):
    """`netboot api --cluster`: the engine batches two clients' sequences through the stages; each gets the
    resident model's greedy text (the official openai client, at once from two threads)."""
    import openai
    from support.serverprocs import Server, wait_for

    prompts = [PROMPT, "Once upon a time"]
    expected = [_greedy(default_model.model, default_model.tokenizer, 16, p) for p in prompts]
    server = Server([sys.executable, "-m", "netboot", "api", "--port", "0", "--parallel", "2", "--cluster",
                     cluster.address, "--stages", "2"], r"listening on http://127\.0\.0\.1:(\d+)", kind="netboot api")
    try:
        origin = f"http://127.0.0.1:{server.port}"
        client = openai.OpenAI(base_url=origin + "/v1", api_key="unused", max_retries=0, timeout=120)

        def ready() -> bool:
            try:
                client.models.list()
                return True
            except openai.APIStatusError:
                return False

        wait_for(ready, 240, "netboot api --cluster to load")
        results: dict[int, str] = {}
        model = client.models.list().data[0].id

        def ask(i: int) -> None:
            r = client.completions.create(model=model, prompt=prompts[i], max_tokens=16, temperature=0)
            results[i] = r.choices[0].text

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert [results.get(i) for i in range(2)] == expected, "".join(server.output)
    finally:
        server.kill()


def test_stages_read_only_their_layers_from_a_url(cluster, default_model, default_model_path, servers, tmp_path):
    """A model URL (`netboot serve`, whose catalog publishes each layer's digest): each stage reads its header and
    its layers by Range requests, checked against the digests, never the 178 MB table (the driver embeds and
    projects); the logits are the resident model's."""
    import json

    from netboot.loader import load, resolve

    root = tmp_path / "models"
    root.mkdir()
    try:  # netboot serve does not follow symbolic links out of its directory
        os.link(default_model_path, root / "gemma.gguf")
    except OSError:
        shutil.copyfile(default_model_path, root / "gemma.gguf")
    server = servers.netboot_serve(root)
    url, cache = server.url("gemma.gguf"), str(tmp_path / "driver-cache")
    resolve(url, cache_dir=cache)  # the driver's own copy first, so that what follows is the stages' reading
    mark = len(server.output)
    staged = load(url, cluster=cluster.address, stages=2, cache_dir=cache)
    p, tok = staged.model, default_model.tokenizer
    ids = tok.encode(PROMPT)
    ours = p.forward(ids, p.new_cache(), 0)
    ref = default_model.model.forward(ids, default_model.model.new_cache(), 0)
    assert np.abs(ours - ref).max() <= LOGIT_BOUND * np.abs(ref).max()
    records = [json.loads(line) for line in server.output[mark:] if line.startswith("{")]
    ranged = sum(r["bytes"] for r in records if r.get("range"))
    layers = sum(s.nbytes for s in p.stages)
    header = min(t.offset for t in staged.file.tensors.values())  # 6.5 MB, read by growing prefixes
    assert layers <= ranged <= layers + len(p.stages) * 3 * header, (ranged, layers, header)
    assert ranged < staged.file.tensors["token_embd.weight"].nbytes  # the table was never read
    for s in p.stages:
        import ray

        ray.kill(s.actor)


def _assert_same_continuation(pipeline, model, ids: list[int], steps: int) -> None:
    """The prompt's logits and those of `steps` greedy tokens after it agree within the bound; same tokens."""
    pc, mc = pipeline.new_cache(), model.new_cache()
    ours, ref = pipeline.forward(ids, pc, 0), model.forward(ids, mc, 0)
    pos = len(ids)
    for _ in range(steps):
        assert np.abs(ours - ref).max() <= LOGIT_BOUND * np.abs(ref).max()
        token = int(ref.argmax())
        assert int(ours.argmax()) == token
        ours, ref = pipeline.forward([token], pc, pos), model.forward([token], mc, pos)
        pos += 1
    assert np.abs(ours - ref).max() <= LOGIT_BOUND * np.abs(ref).max()


def _write_tinyllama_sized(path) -> None:
    """A random Llama with TinyLlama 1.1B's shapes (22 layers, dim 2048, GQA 32/4 heads, vocab 32000), every matrix
    random Q8_0 blocks (1.17 GB)."""
    from support.synthetic import SynthConfig, random_tensors, write_gguf_tensors

    from netboot.tensors.ggml import GGMLType

    config = SynthConfig(dim=2048, hidden=5632, n_layers=22, n_heads=32, n_kv_heads=4, vocab=32000, seq_len=2048)
    write_gguf_tensors(path, config, random_tensors(config, GGMLType.Q8_0, np.random.default_rng(11)))


def test_a_tinyllama_sized_model_over_three_nodes(cluster, tmp_path):
    """The seed's case: a 1.1B-parameter Llama split over 3 nodes, each stage loading its third of the file from
    the path; logits and greedy continuation as in one process."""
    import netboot
    from netboot.loader import load

    path = tmp_path / "tinyllama-shaped-q8_0.gguf"
    _write_tinyllama_sized(path)
    staged = load(path, cluster=cluster.address, stages=3)
    local = netboot.load(path)
    p, m = staged.model, local.model
    assert [len(s.layers) for s in p.stages] in ([7, 8, 7], [8, 7, 7], [7, 7, 8])
    _assert_same_continuation(p, m, [1, 450, 4996, 17354, 1701, 432, 17204], 4)


def _write_streaming_sized(path) -> None:
    """A random Llama whose 16 layers take 17.8 MB each (dim 1024, every matrix Q8_0): two stages of 142 MB."""
    from support.synthetic import SynthConfig, random_tensors, write_gguf_tensors

    from netboot.tensors.ggml import GGMLType

    config = SynthConfig(dim=1024, hidden=4096, n_layers=16, n_heads=16, n_kv_heads=4, vocab=4096, seq_len=512)
    write_gguf_tensors(path, config, random_tensors(config, GGMLType.Q8_0, np.random.default_rng(5)))


def test_stages_on_nodes_smaller_than_their_share_stream_their_layers(cluster, tmp_path):
    """Two nodes that declare their own budget (`ray start --labels netboot-max-memory=290MB`), the stages pinned
    to them by node id: each 142 MB range does not fit next to a Ray worker's ~160 MB, so each stage keeps what
    its budget holds and streams the rest from the file every step. The logits and greedy continuation are those
    of the resident model in one process, and no stage's peak RSS passes its node's budget."""
    import ray

    import netboot
    from netboot.loader import load
    from netboot.planner.budget import MB

    budget = 290 * MB
    budgeted = [cluster.add_node(labels={"netboot-max-memory": "290MB"}) for _ in range(2)]
    path = tmp_path / "streaming-sized-q8_0.gguf"
    _write_streaming_sized(path)
    pins = f"0-7@{budgeted[0].node_id[:12]},8-15@{budgeted[1].node_id[:12]}"
    staged = load(path, cluster=cluster.address, stages=pins, positions=64)
    try:
        p, m = staged.model, netboot.load(path).model
        assert [s.node.id for s in p.stages] == [n.node_id for n in budgeted]
        assert all(s.streamed for s in p.stages), staged.explain()
        assert "netboot-max-memory=290 MB" in staged.explain() and "streamed from the source" in staged.explain()
        _assert_same_continuation(p, m, [1, 450, 3996, 1354, 1701, 432, 2204], 6)
        peaks = [ray.get(s.actor.ready.remote())["peak_rss"] for s in p.stages]
        assert max(peaks) <= budget, (peaks, staged.explain())
        print(staged.explain(), f"\npeak RSS of the stages: {[round(b / MB, 1) for b in peaks]} MB")
    finally:
        for s in staged.model.stages + staged.model.standby:
            ray.kill(s.actor)
        for node in budgeted:  # the failover cases below want the unbudgeted nodes to be the largest spares
            node.kill()


def _run_interrupted(cluster, default_model, interrupt, *flags: str) -> str:
    """`netboot run --cluster` with 2 stages and a spare node; once a few tokens are out, `interrupt(explain)`
    strikes. The run must still print the resident model's greedy text; returns its stderr."""
    if len([n for n in cluster.nodes if n.process.poll() is None]) < 3:
        cluster.add_node()
    n = 40
    expected = _greedy(default_model.model, default_model.tokenizer, n)
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=cluster.token)
    cmd = [sys.executable, "-m", "netboot", "run", "-p", PROMPT, "-n", str(n), "--temperature", "0",
           "--cluster", cluster.address, "--stages", "2", "--explain", *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(line.decode() for line in proc.stderr), daemon=True)
    reader.start()
    out = b""
    deadline = time.monotonic() + 240
    while len(out) < 30 and time.monotonic() < deadline:  # a few tokens generated
        chunk = proc.stdout.read1(64)
        if not chunk:
            break
        out += chunk
    struck = time.monotonic()
    interrupt("".join(stderr))
    out += proc.stdout.read()
    proc.wait(timeout=240)
    reader.join(timeout=10)
    log = "".join(stderr)
    assert proc.returncode == 0, log
    assert out.decode().rstrip("\n") == expected, log
    assert "now on node" in log and "the standby there" in log, log  # the spare node's waiting actor took over
    recovered = float(re.search(r"recovered ([\d.]+) s", log).group(1))
    print(f"recovered {recovered:.2f} s after noticing; run ended {time.monotonic() - struck:.1f} s after")
    return log


@pytest.mark.parametrize("victim", [1, 0])
def test_killing_a_stages_node_mid_generation_loses_nothing(cluster, default_model, victim):
    """Once a few tokens are out, the node that holds stage `victim` dies (raylet and workers, SIGKILL). The run
    moves the range to the standby actor on the spare node, rebuilds its caches (the last stage's from the
    first's record, the first's from the driver's), and prints the same text as an uninterrupted resident run.
    Each case takes a node for good: one is added first to keep a spare."""

    def kill(explain: str) -> None:
        found = re.search(rf"stage {victim}  node (\w+)", explain)
        assert found, explain
        cluster.node(found.group(1)).kill()

    log = _run_interrupted(cluster, default_model, kill)
    assert f"stage {victim} (layers" in log and "stopped answering" in log, log


def test_a_hung_stage_is_replaced_and_nothing_is_lost(cluster, default_model):
    """Stage 1's process stops (SIGSTOP) while its node stays up, so Ray sees nothing wrong: the driver's
    liveness check finds it silent after --stage-timeout, moves its range to the standby, and the text is the
    same as an uninterrupted run's."""
    stopped: list[int] = []

    def stop(explain: str) -> None:
        pid = int(re.search(r"stage 1  node \w+ \([^)]*pid (\d+)\)", explain).group(1))
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)

    try:
        log = _run_interrupted(cluster, default_model, stop, "--stage-timeout", "2")
    finally:
        for pid in stopped:  # Ray kills the replaced actor; make sure, by PID, that it is gone
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert "stage 1 (layers" in log and "stopped answering" in log, log
