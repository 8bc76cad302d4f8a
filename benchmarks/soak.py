"""Soak: many mixed requests through the real bridge, watching for leaks and drift.

Runs the real rosbridge (what `edgeprof bridge` runs), `edgeprof serve` as a subprocess
(default: the embedded SmolLM2-135M on the CPU) and an rclpy robot (RobotProcess). The robot
sends, one at a time, a random mix of:

  stream     a streamed request (max_new_tokens 1..--max-new, sometimes with reset)
  next       a next_token service call (one more token of the session)
  reset      the reset service
  cancel     a request (32 tokens) cancelled right after it is sent
  bad        a bad input (malformed JSON, wrong types, unknown field, limits) -> an error record

until `--requests` operations are done or `--duration` seconds have passed. It records:

  * the daemon's RSS, open file descriptors and threads (and rosbridge's) every --sample-s;
    growth = median of the last 10% of samples vs the first 10% after the warm-up;
  * p99 drift between the first and the last 10% of samples of: the daemon's decode step
    (latency_ms of streamed tokens after the first), the one-way hop daemon-ready -> robot
    receipt (ready_unix_ns -> robot time.time_ns()), and the next_token round trip;
  * run-log size (SQLite + WAL) against the tokens the robot received;
  * at the end (after a SIGTERM to the daemon): that the run log holds every token record the
    robot received (id, index, token_id), streamed and next_token alike.

Targets (issue 13): growth < 5%, p99 drift < 10%. It is a benchmark, not a test: the record
(JSON + PNG) is committed under results/cpu/<date>-soak/.

    python benchmarks/soak.py --requests 10000 --duration 2700 --out results/cpu/2026-11-28-soak/soak.json
    python benchmarks/soak.py --model tiny-test --backend hf-static --requests 60 --out /tmp/soak.json   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MIX = {"stream": 0.45, "next": 0.2, "reset": 0.08, "cancel": 0.1, "bad": 0.17}
PROMPTS = ["Name three colors.", "What is a robot?", "Say hello.", "Count to five.", "Describe the sky.",
           "Pick up the red block.", "Where is the kitchen?"]
TARGET_GROWTH = 0.05
TARGET_DRIFT = 0.10


def _bad_inputs(rid: str) -> list[tuple[str, str | None]]:
    """(raw message, id the error record should carry)."""
    return [
        ("{id: " + rid, None),
        ("", None),
        ('["id","prompt"]', None),
        (json.dumps({"id": rid, "prompt": 5, "max_new_tokens": 1}), rid),
        (json.dumps({"id": rid, "prompt": "hi", "max_new_tokens": 10**6}), rid),
        (json.dumps({"id": rid, "prompt": "hi", "max_new_tokens": 1, "temperature": 0.7}), rid),
        (json.dumps({"id": rid, "max_new_tokens": 1}), rid),
        (json.dumps({"id": rid, "prompt": "   ", "max_new_tokens": 1}), rid),
        (json.dumps({"id": rid, "messages": [{"role": "robot", "content": "hi"}], "max_new_tokens": 1}), rid),
        (json.dumps({"cancel": "no-such-" + rid}), "no-such-" + rid),
    ]


@dataclass
class Tally:
    ops: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MIX, 0))
    failures: list[str] = field(default_factory=list)  # an op that got no final record (silent) or a wrong one
    tokens: set = field(default_factory=set)  # (id, index, token_id) of every token record received
    step_ms: list[tuple[float, float]] = field(default_factory=list)  # (t, latency_ms) decode steps, streamed
    hop_ms: list[tuple[float, float]] = field(default_factory=list)  # (t, receipt - ready) streamed tokens
    next_rtt_ms: list[tuple[float, float]] = field(default_factory=list)
    op_ms: list[tuple[float, str, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def n_ops(self) -> int:
        return sum(self.ops.values())


def _cpu_times() -> tuple[float, float] | None:
    """(steal, total) seconds of all CPUs from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (v[7] / hz if len(v) > 7 else 0.0), sum(v[:8]) / hz


def _proc_sample(pid: int | None) -> dict | None:
    import psutil

    if pid is None:
        return None
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            return {"rss": p.memory_info().rss, "fds": p.num_fds(), "threads": p.num_threads(),
                    "cpu_s": sum(p.cpu_times()[:2])}
    except psutil.Error:
        return None


def _runlog_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


class Sampler(threading.Thread):
    def __init__(self, daemon_pid: int, bridge_pid: int | None, runlog: Path, tally: Tally, every_s: float):
        super().__init__(name="soak-sampler", daemon=True)
        self.pids = {"daemon": daemon_pid, "rosbridge": bridge_pid}
        self.runlog, self.tally, self.every_s = runlog, tally, every_s
        self.samples: list[dict] = []
        self.stop_ev = threading.Event()
        self.t0 = time.monotonic()

    def sample(self) -> None:
        s = {"t": time.monotonic() - self.t0, "ops": self.tally.n_ops, "tokens": len(self.tally.tokens),
             "runlog_bytes": _runlog_bytes(self.runlog), "cpu": _cpu_times(), "load1": os.getloadavg()[0]}
        for name, pid in self.pids.items():
            s[name] = _proc_sample(pid)
        self.samples.append(s)

    def run(self) -> None:
        while not self.stop_ev.wait(self.every_s):
            self.sample()


# ---------------------------------------------------------------------------- the robot's ops


def _new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:10]}"


def _take_tokens(tally: Tally, recs: list[dict], t: float) -> None:
    from edgeprof.ros.robot import RECV_UNIX_KEY

    with tally.lock:
        for r in recs:
            if "index" not in r or "token_id" not in r:
                continue
            tally.tokens.add((r["id"], int(r["index"]), int(r["token_id"])))
            if r["index"] >= 1 and r.get("latency_ms") is not None:
                tally.step_ms.append((t, float(r["latency_ms"])))
            if r.get("ready_unix_ns") and RECV_UNIX_KEY in r:
                tally.hop_ms.append((t, (r[RECV_UNIX_KEY] - r["ready_unix_ns"]) / 1e6))


def op_stream(robot, rng: random.Random, tally: Tally, args) -> str | None:
    rid = _new_id("s")
    recs = robot.send_request(prompt=rng.choice(PROMPTS), max_new_tokens=rng.randint(1, args.max_new),
                              request_id=rid, reset=rng.random() < 0.2, timeout_s=args.op_timeout_s)
    _take_tokens(tally, recs, time.monotonic())
    final = recs[-1]
    if not final.get("done") and final.get("error", {}).get("code") not in ("context_overflow",):
        return f"stream {rid}: ended with {json.dumps(final)[:200]}"
    return None


def op_next(robot, rng, tally: Tally, args) -> str | None:
    rec = robot.next_token(args.op_timeout_s)
    if rec.get("_success"):
        _take_tokens(tally, [rec], time.monotonic())
        with tally.lock:
            tally.next_rtt_ms.append((time.monotonic(), float(rec["_rtt_ms"])))
        return None
    code = rec.get("error", {}).get("code")
    return None if code in ("no_session", "context_overflow") else f"next_token: {json.dumps(rec)[:200]}"


def op_reset(robot, rng, tally, args) -> str | None:
    rec = robot.reset(args.op_timeout_s)
    return None if rec.get("_success") and rec.get("reset") else f"reset: {json.dumps(rec)[:200]}"


def op_cancel(robot, rng, tally, args) -> str | None:
    rid = _new_id("c")
    since = robot.send({"id": rid, "prompt": rng.choice(PROMPTS), "max_new_tokens": 32})
    robot.send({"cancel": rid})
    recs = robot.collect(rid, args.op_timeout_s, since)
    _take_tokens(tally, recs, time.monotonic())
    final = recs[-1]
    ok = final.get("done") and final.get("reason") in ("cancelled", "eos", "length")
    return None if ok else f"cancel {rid}: ended with {json.dumps(final)[:200]}"


def op_bad(robot, rng, tally, args) -> str | None:
    rid = _new_id("b")
    raw, want_id = rng.choice(_bad_inputs(rid))
    since = robot.send_raw(raw)
    rec = robot.wait_record({"id": want_id, "has": ["error"]}, args.op_timeout_s, since)
    return None if "error" in rec else f"bad input {raw[:60]!r}: {json.dumps(rec)[:200]}"


OPS = {"stream": op_stream, "next": op_next, "reset": op_reset, "cancel": op_cancel, "bad": op_bad}


# ---------------------------------------------------------------------------- analysis


def _p99(xs) -> float | None:
    return float(np.percentile(np.asarray(xs, dtype=float), 99)) if len(xs) else None


def drift(samples: list[tuple[float, float]]) -> dict:
    """p99 of the first vs the last 10% of the samples (in time order)."""
    vals = [v for _, v in sorted(samples)]
    k = max(1, len(vals) // 10)
    if len(vals) < 20:
        return {"n": len(vals), "first_p99": None, "last_p99": None, "drift": None}
    first, last = _p99(vals[:k]), _p99(vals[-k:])
    return {"n": len(vals), "n_each": k, "first_p99": first, "last_p99": last,
            "p50": float(np.median(vals)), "p99": _p99(vals), "drift": (last - first) / first if first else None}


def growth(samples: list[dict], proc: str, key: str, warm_frac: float) -> dict:
    """Median of the last 10% of samples vs the first 10% after the warm-up fraction."""
    vals = [s[proc][key] for s in samples if s.get(proc)]
    if len(vals) < 10:
        return {"n": len(vals), "growth": None}
    start = int(len(vals) * warm_frac)
    body = vals[start:]
    k = max(1, len(body) // 10)
    first, last = float(np.median(body[:k])), float(np.median(body[-k:]))
    return {"n": len(vals), "first": first, "last": last, "min": float(min(vals)), "max": float(max(vals)),
            "at_start": float(vals[0]), "growth": (last - first) / first if first else None}


def runlog_check(path: Path, tokens: set) -> dict:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT request_id, idx, token_id FROM tokens WHERE run_id = "
                            "(SELECT max(run_id) FROM run)").fetchall()
    finally:
        conn.close()
    logged = {(r, int(i), int(t)) for r, i, t in rows}
    missing = sorted(tokens - logged)
    return {"robot_tokens": len(tokens), "runlog_tokens": len(logged), "missing_from_runlog": len(missing),
            "missing_examples": [list(m) for m in missing[:10]], "all_received_tokens_logged": not missing}


# ---------------------------------------------------------------------------- main


def _serve_cmd(args, port: int, runlog: Path, config: Path) -> list[str]:
    from edgeprof.ros.rosbridge import free_port

    return [sys.executable, "-m", "edgeprof.cli", "serve", "--model", args.model, "--backend", args.backend,
            "--device", args.device, "--port", str(port), "--metrics-port", str(free_port()),
            "--runlog", str(runlog), "--config", str(config), "--max-ctx", str(args.max_ctx)]


def run(args) -> dict:
    from edgeprof.ros.robot import RobotProcess
    from edgeprof.ros.rosbridge import start_rosbridge

    rng = random.Random(args.seed)
    domain = args.domain_id if args.domain_id is not None else random.randint(1, 200)
    tally = Tally()
    tmp = Path(tempfile.mkdtemp(prefix="edgeprof-soak-"))
    runlog = tmp / "run.db"
    config = tmp / "daemon.yaml"
    config.write_text("session:\n  on_overflow: reset\n  max_queue: 8\nstatus:\n  period_s: 1.0\n")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with start_rosbridge(0, domain_id=domain, log_path=tmp / "rosbridge.log") as rb:
        log = open(tmp / "daemon.log", "w")  # noqa: SIM115 - closed below
        daemon = subprocess.Popen(_serve_cmd(args, rb.port, runlog, config), cwd=REPO, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
        sampler = None
        try:
            with RobotProcess(domain, node_name="edgeprof_soak_robot") as robot:
                robot.wait_ready(args.startup_s)
                sampler = Sampler(daemon.pid, rb.pid, runlog, tally, args.sample_s)
                sampler.sample()
                sampler.start()
                t_start, cpu0 = time.monotonic(), _cpu_times()
                kinds, weights = list(MIX), list(MIX.values())
                while tally.n_ops < args.requests and time.monotonic() - t_start < args.duration:
                    kind = rng.choices(kinds, weights)[0]
                    t0 = time.monotonic()
                    try:
                        err = OPS[kind](robot, rng, tally, args)
                    except Exception as exc:  # a timeout is a silent request: count it, keep going
                        err = f"{kind}: {type(exc).__name__}: {str(exc)[:200]}"
                    tally.ops[kind] += 1
                    tally.op_ms.append((t0 - t_start, kind, (time.monotonic() - t0) * 1e3))
                    if err:
                        tally.failures.append(err)
                        print(f"[{tally.n_ops}] {err}", flush=True)
                    if args.progress and tally.n_ops % args.progress == 0:
                        print(f"[{tally.n_ops} ops, {len(tally.tokens)} tokens, {time.monotonic() - t_start:.0f} s]",
                              flush=True)
                elapsed, cpu1 = time.monotonic() - t_start, _cpu_times()
                sampler.stop_ev.set()
                sampler.join(5)
                sampler.sample()
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            try:
                rc = daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                rc = daemon.wait(10)
            log.close()
    check = runlog_check(runlog, tally.tokens)
    steal = None
    if cpu0 and cpu1:
        steal = (cpu1[0] - cpu0[0]) / max(1e-9, cpu1[1] - cpu0[1])
    samples = sampler.samples if sampler else []
    warm = args.warmup_frac
    record = {
        "benchmark": "soak", "model": args.model, "backend": args.backend, "device": args.device,
        "requests_asked": args.requests, "duration_limit_s": args.duration, "ops_done": tally.n_ops,
        "ops_by_kind": tally.ops, "elapsed_s": elapsed, "ops_per_s": tally.n_ops / elapsed if elapsed else None,
        "failures": len(tally.failures), "failure_examples": tally.failures[:20], "daemon_exit_code": rc,
        "tokens_received": len(tally.tokens),
        "growth": {f"{proc}_{key}": growth(samples, proc, key, warm) for proc in ("daemon", "rosbridge")
                   for key in ("rss", "fds", "threads")},
        "p99_drift": {"decode_step_ms": drift(tally.step_ms), "hop_ready_to_robot_ms": drift(tally.hop_ms),
                      "next_token_rtt_ms": drift(tally.next_rtt_ms)},
        "runlog": {**check, "bytes": samples[-1]["runlog_bytes"] if samples else None,
                   "bytes_per_token": (samples[-1]["runlog_bytes"] / max(1, len(tally.tokens))) if samples else None},
        "targets": {"growth_lt": TARGET_GROWTH, "p99_drift_lt": TARGET_DRIFT},
        "cpu": {"count": os.cpu_count(), "steal_fraction": steal,
                "load1_mean": float(np.mean([s["load1"] for s in samples])) if samples else None},
        "host": platform.platform(), "python": platform.python_version(),
        "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "warmup_frac": warm,
        "samples": samples, "op_ms": tally.op_ms,
        "series": {"step_ms": tally.step_ms, "hop_ms": tally.hop_ms, "next_rtt_ms": tally.next_rtt_ms},
    }
    derive(record)
    return record


def derive(record: dict) -> None:
    """Figures computed from the samples: the run log's steady growth per token (a linear fit over
    the second half of the samples: by then the WAL file has reached its checkpoint size, ~4 MB,
    and is reused, so db + wal grows with the database alone), and the verdict."""
    s = [x for x in record["samples"] if x.get("tokens") is not None]
    half = s[len(s) // 2:]
    if len(half) >= 2 and half[-1]["tokens"] > half[0]["tokens"]:
        fit = np.polyfit([x["tokens"] for x in half], [x["runlog_bytes"] for x in half], 1)
        record["runlog"]["bytes_per_token_steady"] = float(fit[0])
    record["verdict"] = _verdict(record)


def _verdict(r: dict) -> dict:
    g = {k: v["growth"] for k, v in r["growth"].items() if k.startswith("daemon") and v.get("growth") is not None}
    d = {k: v["drift"] for k, v in r["p99_drift"].items() if v.get("drift") is not None}
    return {"growth_ok": all(abs(x) < TARGET_GROWTH for x in g.values()) if g else None,
            "drift_ok": all(abs(x) < TARGET_DRIFT for x in d.values()) if d else None,
            "runlog_complete": r["runlog"]["all_received_tokens_logged"],
            "no_silent_or_wrong_records": r["failures"] == 0,
            "requests_done_vs_asked": f"{r['ops_done']}/{r['requests_asked']}"}


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = record["samples"]
    t = [x["t"] / 60 for x in s]
    fig, ax = plt.subplots(2, 2, figsize=(12, 8))
    a = ax[0][0]
    a.plot(t, [x["daemon"]["rss"] / 2**20 if x.get("daemon") else np.nan for x in s], label="daemon RSS (MiB)")
    a.plot(t, [x["rosbridge"]["rss"] / 2**20 if x.get("rosbridge") else np.nan for x in s], label="rosbridge RSS (MiB)")
    a.set_xlabel("minutes"), a.set_ylabel("MiB"), a.legend(), a.set_title("resident memory")
    a = ax[0][1]
    for proc in ("daemon", "rosbridge"):
        a.plot(t, [x[proc]["fds"] if x.get(proc) else np.nan for x in s], label=f"{proc} open fds")
        a.plot(t, [x[proc]["threads"] if x.get(proc) else np.nan for x in s], "--", label=f"{proc} threads")
    a.set_xlabel("minutes"), a.legend(fontsize=8), a.set_title("file descriptors and threads")
    a = ax[1][0]
    # series times are time.monotonic(); the first op's token or call is close to the soak's start
    t_first = min((min(x for x, _ in series) for series in record["series"].values() if series), default=0.0)
    for name, series in record["series"].items():
        if len(series) < 20:
            continue
        arr = sorted(series)
        chunks = np.array_split(np.asarray([v for _, v in arr]), 20)
        times = np.array_split(np.asarray([x for x, _ in arr]), 20)
        a.plot([(np.median(tt) - t_first) / 60 for tt in times], [np.percentile(c, 99) for c in chunks],
               marker="o", label=f"{name} p99 (20 windows)")
    a.set_xlabel("minutes"), a.set_ylabel("ms"), a.set_yscale("log"), a.legend(fontsize=8), a.set_title("p99 over time")
    a = ax[1][1]
    a.plot([x["tokens"] for x in s], [x["runlog_bytes"] / 2**20 for x in s], marker=".")
    slope = record["runlog"].get("bytes_per_token_steady")
    a.set_xlabel("tokens received by the robot"), a.set_ylabel("run log MiB (db + wal)")
    a.set_title("run-log size" + (f" (steady slope {slope:.0f} B/token)" if slope else ""))
    fig.suptitle(f"edgeprof soak, CPU ({record['cpu']['count']} cores), {record['model']}: {record['ops_done']} ops "
                 f"({record['requests_asked']} asked) in {record['elapsed_s'] / 60:.0f} min")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _print(r: dict) -> None:
    print(f"soak: {r['ops_done']} ops of {r['requests_asked']} asked in {r['elapsed_s']:.0f} s "
          f"({r['ops_per_s']:.2f}/s) {r['ops_by_kind']}; {r['tokens_received']} tokens; failures {r['failures']}; "
          f"CPU steal {100 * (r['cpu']['steal_fraction'] or 0):.1f}%")
    for k, v in r["growth"].items():
        if v.get("growth") is not None:
            print(f"  growth {k:<20} {v['first']:>14.0f} -> {v['last']:>14.0f}  {100 * v['growth']:+6.2f}%")
    for k, v in r["p99_drift"].items():
        if v.get("drift") is not None:
            print(f"  p99 drift {k:<22} {v['first_p99']:8.3f} -> {v['last_p99']:8.3f} ms  {100 * v['drift']:+6.1f}%  "
                  f"(n {v['n']})")
    rl = r["runlog"]
    print(f"  run log: {rl['bytes']} bytes, {rl['bytes_per_token']:.0f} B/token overall, "
          f"{rl.get('bytes_per_token_steady') or float('nan'):.0f} B/token steady; {rl['runlog_tokens']} logged, "
          f"{rl['missing_from_runlog']} of {rl['robot_tokens']} robot tokens missing")
    print(f"  verdict: {r['verdict']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-ctx", type=int, default=1024)
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=7200, help="stop after this many seconds even if short")
    p.add_argument("--max-new", type=int, default=6, help="largest max_new_tokens of a streamed request")
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--warmup-frac", type=float, default=0.05, help="share of samples before the growth baseline")
    p.add_argument("--op-timeout-s", type=float, default=60.0)
    p.add_argument("--startup-s", type=float, default=300.0)
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--domain-id", type=int, default=None)
    p.add_argument("--progress", type=int, default=500, help="print a line every N ops (0: never)")
    p.add_argument("--out", required=True, help="JSON record; the PNG goes beside it")
    p.add_argument("--replot", action="store_true", help="recompute derived figures of --out and re-plot it")
    args = p.parse_args(argv)
    if args.replot:
        out = Path(args.out)
        record = json.loads(out.read_text())
        derive(record)
        out.write_text(json.dumps(record, indent=1))
        plot(record, out.with_suffix(".png"))
        _print(record)
        return 0
    record = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    plot(record, out.with_suffix(".png"))
    _print(record)
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
