#!/usr/bin/env python3
"""dask_runner.py: runs the tasks of a truthound plan on a Dask cluster.

Dask has no job-submission API, so, like the Dask Kubernetes operator's DaskJob, a runner process
(a Job from the worker image in a cluster; a local process started by `th profile --backend
dask`) connects to the scheduler (DASK_SCHEDULER_ADDRESS) as a client and maps the plan's tasks
over its workers. Each Dask task runs `th-worker run-task --plan PLAN --task I --out
PARTIALS/I` in a subprocess, so the profiling code is the same on every backend; the plan and
the partials live where the workers can reach them (object storage, or a shared file system).

th-worker is shipped to the workers that lack it: a worker that already has the same binary
(same SHA-256, at the path given or in its temp directory) uses it; else one named `th-worker`
on its PATH; else the binary's bytes are sent to it once and written to its temp directory.

Input: one JSON object on stdin (so that credentials never appear in a process list), or in
$TH_DASK_RUNNER_CONFIG (the operator's runner Job, whose credentials come from its Secret):
  scheduler        the scheduler's address (default: $DASK_SCHEDULER_ADDRESS)
  run_id           prefix of the Dask keys (`<run_id>-<task>`) and the event topic
  plan_uri         the plan (a URI or a path the workers can read)
  partials_prefix  task I writes `<partials_prefix>/I`
  tasks            the task ids to run
  env              environment of each th-worker (storage endpoint, credentials, TH_LOG)
  retries          retries of a task whose th-worker failed transiently (not 64/65)
  worker_bin       path of a th-worker binary to ship (optional)
  worker_name      the name looked up on the workers' PATH (default th-worker)
  connect_timeout  seconds to wait for the scheduler (default 10)
  storage_args     extra arguments of `th-worker run-task` (optional)
  forward_env_prefixes  the runner's own environment variables with these prefixes are added
                   to `env` (optional; the runner Job forwards AWS_, GOOGLE_, AZURE_)

Output: JSON lines on stdout, one per change:
  {"event": "connected", "scheduler": ..., "workers": N, "threads": T}
  {"event": "worker_bin", "shipped": [...], "present": [...]}
  {"task": I, "state": "running", "attempt": A, "worker": ADDR}
  {"task": I, "state": "retrying", "attempt": A, "exit_code": C, "message": ...}
  {"task": I, "state": "succeeded", "exit_code": 0}
  {"task": I, "state": "failed", "exit_code": C, "message": ...}
  {"event": "finished", "succeeded": N, "failed": M}
  {"event": "error", "kind": "unreachable|missing_dependency|invalid|internal", "message": ...}
Exit code: 0 when every task ran to an end (succeeded or failed: see the lines), 3 scheduler
unreachable, 4 dask missing, 2 invalid input, 130 cancelled (SIGTERM/SIGINT), 1 other errors.
"""

import hashlib
import json
import os
import signal
import sys
import threading

EXIT_INVALID = 2
EXIT_UNREACHABLE = 3
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


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- run on the workers (shipped by value: cloudpickle pickles functions of __main__) ---------


def _cached_path(sha, name):
    import tempfile

    return os.path.join(tempfile.gettempdir(), "truthound", f"{name}-{sha[:16]}")


def _probe_bin(sha, local_path, name):
    """The th-worker this worker should run, or None when it must be shipped."""
    import hashlib
    import shutil

    def same(path):
        if not path or not os.path.isfile(path) or not os.access(path, os.X_OK):
            return False
        if not sha:
            return True
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest() == sha

    if same(local_path):
        return local_path
    if sha and same(_cached_path(sha, name)):
        return _cached_path(sha, name)
    if not local_path or not sha:
        return shutil.which(name)
    found = shutil.which(name)
    return found


def _install_bin(data, sha, name):
    path = _cached_path(sha, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return path


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


def _run_task(topic, cancel_name, bins, sha, local_bin, name, task, argv, env):
    """One task: `th-worker run-task` in a subprocess. Returns {"exit_code", "message"} when the
    task succeeded or failed for good; raises when it failed transiently (Dask retries it)."""
    import subprocess
    import tempfile
    import time

    from distributed import Event, get_worker

    worker = get_worker()
    started = time.time()
    worker.log_event(topic, {"task": task, "state": "running", "worker": worker.address})
    path = bins.get(worker.address) or _probe_bin(sha, local_bin, name)
    if not path:
        # A worker that joined after the binary was shipped, with none of its own.
        return {
            "exit_code": 127,
            "message": f"{name} is not on Dask worker {worker.address} (install it in the "
            f"worker image, or give the runner a binary to ship)",
        }
    fd, term_log = tempfile.mkstemp(prefix="th-term-")
    os.close(fd)
    full_env = dict(os.environ)
    full_env.setdefault("TH_LOG", "warn")
    full_env.update(env)
    full_env["TH_TERMINATION_LOG"] = term_log
    cancel = Event(cancel_name) if cancel_name else None
    try:
        with tempfile.TemporaryFile(mode="w+b") as err:
            proc = subprocess.Popen(
                [path] + argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=err, env=full_env,
            )
            while True:
                try:
                    rc = proc.wait(timeout=2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                try:
                    if cancel is not None and cancel.is_set():
                        proc.kill()
                        proc.wait()
                        raise RuntimeError("cancelled")
                except RuntimeError:
                    raise
                except Exception:
                    pass  # the scheduler is busy or gone: keep running
            err.seek(0)
            stderr_text = err.read()[-65536:].decode("utf-8", errors="replace")
        millis = int((time.time() - started) * 1000)
        if rc == 0:
            return {"exit_code": 0, "message": "", "millis": millis}
        message = _failure_message(term_log, stderr_text)
        if rc < 0:
            message = f"th-worker killed by signal {-rc}" + (f": {message}" if message else "")
        if rc in PERMANENT:
            return {"exit_code": rc, "message": message, "millis": millis}
        worker.log_event(
            topic, {"task": task, "state": "attempt_failed", "exit_code": rc, "message": message}
        )
        raise RuntimeError(f"exit_code={rc}: {message}")
    finally:
        try:
            os.unlink(term_log)
        except OSError:
            pass


# ---- the runner ------------------------------------------------------------------------------


def main():
    try:
        # In a pod (the operator's runner Job) the input is in the environment, without
        # credentials: those come from the pod's Secret and are forwarded below.
        given = os.environ.get("TH_DASK_RUNNER_CONFIG")
        cfg = json.loads(given) if given else json.load(sys.stdin)
    except ValueError as e:
        fail("invalid", f"the runner's input is not JSON: {e}", EXIT_INVALID)
    scheduler = cfg.get("scheduler") or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not scheduler:
        fail("invalid", "no scheduler address (give one, or set DASK_SCHEDULER_ADDRESS)", EXIT_INVALID)
    for key in ("run_id", "plan_uri", "partials_prefix", "tasks"):
        if key not in cfg:
            fail("invalid", f"the runner's input lacks `{key}`", EXIT_INVALID)
    try:
        import distributed
        from distributed import Client, Event
    except ImportError as e:
        fail(
            "missing_dependency",
            f"{sys.executable} cannot import dask.distributed ({e}): "
            "pip install 'dask[distributed]==2026.8.0'",
            EXIT_MISSING,
        )

    run_id = cfg["run_id"]
    tasks = [int(t) for t in cfg["tasks"]]
    retries = int(cfg.get("retries", 2))
    env = {str(k): str(v) for k, v in (cfg.get("env") or {}).items()}
    # The runner's own variables with these prefixes (its pod's credentials) go to every task.
    prefixes = tuple(cfg.get("forward_env_prefixes") or ())
    for k, v in os.environ.items():
        if prefixes and k.startswith(prefixes):
            env.setdefault(k, v)
    name = cfg.get("worker_name") or "th-worker"
    local_bin = cfg.get("worker_bin")
    prefix = cfg["partials_prefix"].rstrip("/")
    extra_args = [str(a) for a in cfg.get("storage_args") or []]
    timeout = float(cfg.get("connect_timeout", 10))

    try:
        client = Client(scheduler, timeout=f"{timeout}s")
    except (OSError, TimeoutError) as e:
        fail("unreachable", f"cannot connect to the Dask scheduler at {scheduler}: {e}", EXIT_UNREACHABLE)
    except ValueError as e:
        fail("invalid", f"`{scheduler}` is not a Dask scheduler address: {e}", EXIT_INVALID)

    cancel_name = f"{run_id}-cancel"
    cancel_event = Event(cancel_name, client=client)
    futures = {}
    cancelled = threading.Event()

    def on_signal(signum, frame):
        if cancelled.is_set():
            return
        cancelled.set()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        info = client.scheduler_info(n_workers=-1)
        workers = info.get("workers", {})
        emit({
            "event": "connected",
            "scheduler": scheduler,
            "dask": distributed.__version__,
            "workers": len(workers),
            "threads": sum(w.get("nthreads", 0) for w in workers.values()),
        })

        sha = sha256_file(local_bin) if local_bin else None
        bins = {}
        if workers:
            bins = client.run(_probe_bin, sha, local_bin, name)
            missing = [w for w, p in bins.items() if not p]
            if missing and local_bin:
                with open(local_bin, "rb") as f:
                    data = f.read()
                shipped = client.run(_install_bin, data, sha, name, workers=missing)
                bins.update(shipped)
                del data
            emit({
                "event": "worker_bin",
                "shipped": sorted(w for w in bins if w in missing and bins[w]),
                "present": sorted(w for w in bins if w not in missing),
                "missing": sorted(w for w in bins if not bins[w]),
            })

        attempts = {}

        def on_event(event):
            _, msg = event
            t = msg.get("task")
            if t is None:
                return
            if msg.get("state") == "running":
                attempts[t] = attempts.get(t, 0) + 1
                emit({"task": t, "state": "running", "attempt": attempts[t], "worker": msg.get("worker")})
            elif msg.get("state") == "attempt_failed" and attempts.get(t, 1) <= retries:
                emit({
                    "task": t, "state": "retrying", "attempt": attempts.get(t, 1),
                    "exit_code": msg.get("exit_code"), "message": msg.get("message", ""),
                })

        client.subscribe_topic(run_id, on_event)

        for t in tasks:
            argv = ["run-task", "--plan", cfg["plan_uri"], "--task", str(t),
                    "--out", f"{prefix}/{t}"] + extra_args
            fut = client.submit(
                _run_task, run_id, cancel_name, bins, sha, local_bin, name, t, argv, env,
                key=f"{run_id}-{t}", pure=False, retries=retries,
            )
            futures[fut.key] = (t, fut)

        succeeded = failed = 0
        for fut in distributed.as_completed([f for _, f in futures.values()]):
            t, _ = futures[fut.key]
            if fut.status == "finished":
                r = fut.result()
                if r.get("exit_code") == 0:
                    succeeded += 1
                    emit({"task": t, "state": "succeeded", "exit_code": 0, "millis": r.get("millis")})
                else:
                    failed += 1
                    emit({"task": t, "state": "failed", "exit_code": r.get("exit_code"),
                          "message": r.get("message", "")})
            else:
                failed += 1
                exc = fut.exception()
                text = str(exc)
                code = 1
                if text.startswith("exit_code="):
                    head, _, rest = text.partition(": ")
                    try:
                        code = int(head[len("exit_code="):])
                    except ValueError:
                        pass
                    text = rest
                else:
                    text = f"{type(exc).__name__}: {text}"
                emit({"task": t, "state": "failed", "exit_code": code, "message": text})
        emit({"event": "finished", "succeeded": succeeded, "failed": failed})
        client.close()
        return 0
    except KeyboardInterrupt:
        try:
            cancel_event.set()
            client.cancel([f for _, f in futures.values()], force=True)
        except Exception:
            pass
        emit({"event": "cancelled"})
        try:
            client.close(timeout=5)
        except Exception:
            pass
        return EXIT_CANCELLED


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - report anything as one JSON line
        emit({"event": "error", "kind": "internal", "message": f"{type(e).__name__}: {e}"})
        sys.exit(1)
