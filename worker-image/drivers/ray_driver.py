#!/usr/bin/env python3
"""ray_driver.py: runs the tasks of a truthound plan on a Ray cluster, as a Ray job.

`th profile --backend ray` (and the operator) submit this driver through the Ray dashboard's Jobs
REST API: a `working_dir` package holding it (and a th-worker binary, when one is shipped) is
uploaded, then a job with the entrypoint `python ray_driver.py` is posted. The driver fans the
plan's tasks out as Ray tasks (one CPU each); each runs `th-worker run-task --plan PLAN --task I
--out PARTIALS/I` in a subprocess, so the profiling code is the same on every backend; the plan
and the partials live where the workers can reach them (object storage, or a shared file system).

th-worker: the one in the working directory (shipped in the package), else `th-worker` on the
PATH of the node.

Input: the job's environment (its runtime_env `env_vars`, which every Ray task of the job has too):
  TH_RAY_CONFIG    one JSON object:
    run_id           names the run
    plan_uri         the plan (a URI or a path the workers can read)
    partials_prefix  task I writes `<partials_prefix>/I`
    tasks            the task ids to run
    retries          retries of a task whose th-worker failed transiently (not 64/65)
    storage_args     extra arguments of `th-worker run-task` (optional)
    worker_name      the name looked up on the nodes' PATH (default th-worker)
  and in the working directory, th_env.json: the storage endpoint and credentials of th-worker
  (TH_S3_ENDPOINT, AWS_*, ...), a JSON object of variables added to each th-worker's environment.
  They travel in the package rather than in `env_vars`, which the dashboard shows to all.

Output: JSON lines on stdout (the job's logs), one per change, as the Dask runner's:
  {"event": "connected", "ray": VERSION, "workers": NODES, "threads": CPUS}
  {"event": "worker_bin", "shipped": [...], "missing": [...]}
  {"task": I, "state": "running", "attempt": A, "worker": NODE_IP}
  {"task": I, "state": "retrying", "attempt": A, "exit_code": C, "message": ...}
  {"task": I, "state": "succeeded", "exit_code": 0, "millis": MS}
  {"task": I, "state": "failed", "exit_code": C, "message": ...}
  {"event": "finished", "succeeded": N, "failed": M}
  {"event": "cancelled"}
  {"event": "error", "kind": "invalid|missing_dependency|internal", "message": ...}
Exit code: 0 when every task ran to an end (succeeded or failed: see the lines), 2 invalid input,
4 ray missing, 130 stopped (SIGTERM/SIGINT), 1 other errors.
"""

import json
import os
import signal
import sys
import threading
import time

EXIT_INVALID = 2
EXIT_MISSING = 4
EXIT_CANCELLED = 130
# th-worker's exit codes that say retrying cannot help: invalid request, bad data.
PERMANENT = (64, 65)

_out_lock = threading.Lock()


def emit(obj):
    line = json.dumps(obj, separators=(",", ":"))
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def fail(kind, message, code):
    emit({"event": "error", "kind": kind, "message": message})
    sys.exit(code)


# ---- run on the workers ------------------------------------------------------------------------


def _storage_env():
    """th-worker's storage variables, from th_env.json in the working directory (none without)."""
    try:
        with open(os.path.join(os.getcwd(), "th_env.json"), encoding="utf-8") as f:
            env = json.load(f)
    except FileNotFoundError:
        return {}
    if not isinstance(env, dict):
        raise ValueError("th_env.json is not a JSON object")
    return {str(k): str(v) for k, v in env.items()}


def _worker_path(name):
    """The th-worker of this node: the shipped one in the working directory, else on PATH."""
    import shutil
    import stat
    import tempfile

    local = os.path.join(os.getcwd(), name)
    if os.path.isfile(local):
        if os.access(local, os.X_OK):
            return local
        try:
            os.chmod(local, os.stat(local).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            return local
        except OSError:
            # a read-only working directory: an executable copy in the temp directory
            copy = os.path.join(tempfile.gettempdir(), "truthound", f"{name}-{os.getpid()}")
            os.makedirs(os.path.dirname(copy), exist_ok=True)
            shutil.copyfile(local, copy)
            os.chmod(copy, 0o755)
            return copy
    return shutil.which(name)


def _die_with_parent():
    """In the child, before exec: SIGKILL when the Ray worker dies (a stopped job kills its
    workers; th-worker must not outlive them)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _failure_message(term_log, stderr_text):
    """What th-worker said: its termination message, else its last `error:` line, else the tail."""
    try:
        with open(term_log, encoding="utf-8", errors="replace") as f:
            msg = f.read().strip()
        if msg:
            return msg
    except OSError:
        pass
    lines = [l for l in stderr_text.splitlines() if l.strip()]
    for l in reversed(lines):
        if l.startswith("error:"):
            return l[len("error:"):].strip()
    return "\n".join(lines[-5:])[-2000:]


def _run_task(task, attempt, argv, name, events):
    """One attempt of one task: `th-worker run-task` in a subprocess. Returns {"exit_code",
    "message", "millis", "worker"}; the driver decides about retries."""
    import subprocess
    import tempfile

    import ray

    node = ray.util.get_node_ip_address()
    started = time.time()
    try:
        events.put.remote({"task": task, "state": "running", "attempt": attempt, "worker": node})
    except Exception:
        pass
    path = _worker_path(name)
    if not path:
        return {
            "exit_code": 127, "worker": node, "millis": 0,
            "message": f"{name} is not on Ray node {node} (install it in the Ray image, or "
            f"let th ship one in the job's working_dir)",
        }
    env = dict(os.environ)
    try:
        env.update(_storage_env())
    except (OSError, ValueError) as e:
        # The package is this job's own: a broken one is an invalid submission, not a retry.
        return {"exit_code": 64, "worker": node, "millis": 0,
                "message": f"cannot read th_env.json in the job's working_dir: {e}"}
    fd, term_log = tempfile.mkstemp(prefix="th-term-")
    os.close(fd)
    env.setdefault("TH_LOG", "warn")
    env["TH_TERMINATION_LOG"] = term_log
    try:
        with tempfile.TemporaryFile(mode="w+b") as err:
            rc = subprocess.call(
                [path] + argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env=env, preexec_fn=_die_with_parent,
            )
            err.seek(0)
            stderr_text = err.read()[-65536:].decode("utf-8", errors="replace")
        millis = int((time.time() - started) * 1000)
        if rc == 0:
            return {"exit_code": 0, "message": "", "millis": millis, "worker": node}
        message = _failure_message(term_log, stderr_text)
        if rc < 0:
            message = f"th-worker killed by signal {-rc}" + (f": {message}" if message else "")
        return {"exit_code": rc, "message": message, "millis": millis, "worker": node}
    finally:
        try:
            os.unlink(term_log)
        except OSError:
            pass


class _Events:
    """Where the tasks say that they started (the driver reads it while it waits)."""

    def __init__(self):
        self.queue = []

    def put(self, event):
        self.queue.append(event)

    def take(self):
        q, self.queue = self.queue, []
        return q


# ---- the driver ------------------------------------------------------------------------------


def main():
    try:
        cfg = json.loads(os.environ.get("TH_RAY_CONFIG") or "")
    except ValueError as e:
        fail("invalid", f"TH_RAY_CONFIG is not JSON: {e}", EXIT_INVALID)
    if not isinstance(cfg, dict):
        fail("invalid", "TH_RAY_CONFIG is not a JSON object", EXIT_INVALID)
    for key in ("run_id", "plan_uri", "partials_prefix", "tasks"):
        if key not in cfg:
            fail("invalid", f"TH_RAY_CONFIG lacks `{key}`", EXIT_INVALID)
    try:
        import ray
    except ImportError as e:
        fail("missing_dependency", f"{sys.executable} cannot import ray ({e})", EXIT_MISSING)

    tasks = [int(t) for t in cfg["tasks"]]
    retries = int(cfg.get("retries", 2))
    name = cfg.get("worker_name") or "th-worker"
    prefix = cfg["partials_prefix"].rstrip("/")
    extra_args = [str(a) for a in cfg.get("storage_args") or []]

    cancelled = threading.Event()

    def on_signal(signum, frame):
        if cancelled.is_set():
            return
        cancelled.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    pending = {}  # ObjectRef -> task
    try:
        ray.init(log_to_driver=False)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        emit({
            "event": "connected",
            "ray": ray.__version__,
            "workers": len(nodes),
            "threads": int(ray.cluster_resources().get("CPU", 0)),
        })
        shipped = os.path.isfile(os.path.join(os.getcwd(), name))
        emit({"event": "worker_bin", "shipped": ["working_dir"] if shipped else [], "missing": []})

        run_task = ray.remote(num_cpus=1, max_retries=0)(_run_task)
        events = ray.remote(num_cpus=0)(_Events).remote()
        attempts = {}

        def submit(t):
            attempts[t] = attempts.get(t, 0) + 1
            argv = ["run-task", "--plan", cfg["plan_uri"], "--task", str(t),
                    "--out", f"{prefix}/{t}"] + extra_args
            pending[run_task.remote(t, attempts[t], argv, name, events)] = t

        def drain_events():
            try:
                for ev in ray.get(events.take.remote(), timeout=10):
                    t = ev.get("task")
                    # a late start of an attempt already ended is not news
                    if t in attempts and ev.get("attempt") == attempts[t] and t not in done:
                        emit(ev)
            except Exception:
                pass

        done = set()
        for t in tasks:
            submit(t)
        succeeded = failed = 0
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
            drain_events()
            for ref in ready:
                t = pending.pop(ref)
                try:
                    r = ray.get(ref)
                except ray.exceptions.RayError as e:
                    # the worker died (OOM kill, node lost): transient
                    r = {"exit_code": None, "message": f"{type(e).__name__}: {e}"[-2000:]}
                code = r.get("exit_code")
                if code == 0:
                    succeeded += 1
                    done.add(t)
                    emit({"task": t, "state": "succeeded", "exit_code": 0, "millis": r.get("millis")})
                elif code in PERMANENT or attempts[t] > retries:
                    failed += 1
                    done.add(t)
                    emit({"task": t, "state": "failed", "exit_code": 1 if code is None else code,
                          "message": r.get("message", "")})
                else:
                    emit({"task": t, "state": "retrying", "attempt": attempts[t],
                          "exit_code": code, "message": r.get("message", "")})
                    submit(t)
        emit({"event": "finished", "succeeded": succeeded, "failed": failed})
        return 0
    except KeyboardInterrupt:
        for ref in list(pending):
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        emit({"event": "cancelled"})
        return EXIT_CANCELLED


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - report anything as one JSON line
        emit({"event": "error", "kind": "internal", "message": f"{type(e).__name__}: {e}"})
        sys.exit(1)
