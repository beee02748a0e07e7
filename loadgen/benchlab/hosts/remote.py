"""``--hosts ...,loadgen=URL``: the load generator on its own host, the results back here.

This process coordinates. It starts the database, the upstream and the targets as in every split
run (``hosts.lab``), then runs ``benchlab run`` in the loadgen image on the loadgen host: host
networking, that host's CPU set, uid 10001 from the start, no capability, no-new-privileges
(compose's loadgen keeps three capabilities for its entrypoint's user switch, and the host PID
namespace to see a local Postgres; this one needs neither: the database's CPU comes from
``hosts.dbstats``). It verifies and measures from there; its lines are shown here as they come.

Its run directory comes back into ``--out`` here: results.csv and run.json every
``SYNC_INTERVAL_S`` (a torn last row left for the next copy), everything at the end, whether the
run ends, fails, loses a host or is stopped (Ctrl-C or SIGTERM here become SIGTERM there, which
the remote run ends as ``interrupted``). Then run.json gets every host's record (``hosts``) and
this machine builds the report. A loadgen host lost mid-run leaves the rows copied so far and a
``partial`` run.json that says so. ``--resume RUN_DIR`` copies the run directory there first.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tarfile
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any

from benchlab.errors import BenchlabError
from benchlab.hosts import images
from benchlab.hosts.engine import ENGINE_ERRORS, _why
from benchlab.hosts.lab import HEALTHY_TIMEOUT_S, HostsLab, signals_held, started
from benchlab.model.codec import CSV_NAME
from benchlab.rundir import RUN_JSON, check_out_dir, read_run_json, write_run_json
from benchlab.targets import Target

SYNC_INTERVAL_S = 2.0
REMOTE_OUT = "/results"  # the image's results folder, owned by its user (uid 10001)
SCENARIO_FOLDER = "benchlab-scenario"  # in the image's /tmp, the user's home
LOADGEN_UID = 10001
STOP_WAIT_S = 120  # for the remote run to write its last row and run.json after SIGTERM


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def remote_run(args: argparse.Namespace) -> int:
    """``benchlab run`` with the load generator on ``loadgen=URL``; the exit code the remote run gave."""
    from benchlab.commands import plan_run

    meta, scenario, targets, _steps, tests = plan_run(args)
    if args.profile or scenario.profile or meta.get("profile"):
        raise BenchlabError("--profile needs --native: py-spy must read the targets' processes, which a remote "
                            "lab does not grant; profile with `benchlab run --native --profile`")  # fmt: skip
    out = Path(args.resume).parent if args.resume else Path(args.out)
    check_out_dir(out)
    run = RemoteRun(out.resolve(), Path(args.resume).name if args.resume else None)
    outcome: BaseException | None = None
    with started(args.host_specs, targets) as lab:
        run.container = _create(lab, args, targets, scenario.name, scenario.to_yaml(), tests, run)
        try:
            run.follow()
        except KeyboardInterrupt as exc:  # here, or SIGTERM (cli): the remote run ends interrupted too
            outcome = exc
            with signals_held():
                run.stop()
    with signals_held():
        run_dir = run.finish(lab)
    if isinstance(outcome, KeyboardInterrupt) or run.exit_code == 130:
        raise KeyboardInterrupt
    if run_dir is None or run.exit_code == 2:
        raise BenchlabError(run.error or f"the load generator on {lab.engines['loadgen'].spec.url} ended "
                            f"without a run (exit {run.exit_code})")  # fmt: skip
    _say(f"results: {run_dir / CSV_NAME}")
    if not args.no_report:
        from benchlab.report.build import build_report

        try:
            _say(f"report: {build_report(run_dir, claims_path=args.claims)}")
        except BenchlabError as exc:
            _say(f"no report: {exc}")
    return 1 if run.exit_code != 0 or run.lost else 0


def _create(lab: HostsLab, args: argparse.Namespace, targets: list[Target], scenario_name: str, scenario_yaml: str,
            tests: list[str], run: RemoteRun) -> Any:  # fmt: skip
    """The loadgen container, created with what it needs copied in (the scenario; the run to resume), started."""
    from benchlab.metadata import git_commit

    engine = lab.engines["loadgen"]
    argv = ["benchlab", "run", "--no-report", "--out", REMOTE_OUT, "--dsn", args.dsn,
            *(f"--target={t.name}={t.url}" for t in targets)]  # fmt: skip
    if run.run_id:
        argv += ["--resume", f"{REMOTE_OUT}/{run.run_id}"]
    else:
        argv += ["--scenario", f"/tmp/{SCENARIO_FOLDER}/{scenario_name}.yaml",
                 "--targets", ",".join(t.name for t in targets)]  # fmt: skip
        argv += ["--tests", ",".join(tests)] if tests else []
    env = {
        "BENCHLAB_MODE": "hosts", "BENCHLAB_OUT": REMOTE_OUT, "BENCHLAB_RESULTS_HOST": str(run.out),
        "BENCHLAB_UPSTREAM_URL": lab.upstream_url, "BENCHLAB_DB_STATS_URL": lab.db_stats_url or "",
        "BENCHLAB_GIT_COMMIT": git_commit(), "BENCHLAB_READY_TIMEOUT": str(HEALTHY_TIMEOUT_S),
    }  # fmt: skip
    _say(f"loadgen host {engine.spec.url}: starting the load generator (cpuset {engine.spec.cpuset or 'not pinned'})")
    container = engine.create("loadgen", images.loadgen_image(), argv, env, user=f"{LOADGEN_UID}:{LOADGEN_UID}",
                              cap_drop=["ALL"], security_opt=["no-new-privileges:true"])  # fmt: skip
    container.put_archive("/tmp", _tar({f"{SCENARIO_FOLDER}/{scenario_name}.yaml": scenario_yaml.encode()}))
    if run.run_id:
        local = run.out / run.run_id
        container.put_archive(REMOTE_OUT, _tar({f"{run.run_id}/{p.relative_to(local)}": p.read_bytes()
                                                for p in sorted(local.rglob("*")) if p.is_file()}))  # fmt: skip
    container.start()
    container.reload()
    lab.record["loadgen"]["containers"] = {
        container.name: {"id": container.id[:12], "pid": container.attrs["State"]["Pid"]}}
    return container


def _tar(files: dict[str, bytes]) -> bytes:
    """A tar of ``files`` (path: content) owned by the loadgen's user, folders included."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs = sorted({str(parent) for name in files for parent in PurePosixPath(name).parents if str(parent) != "."})
        for name in [*dirs, *files]:
            info = tarfile.TarInfo(name)
            info.uid = info.gid = LOADGEN_UID
            info.mtime = int(time.time())
            if name in files:
                info.size, info.mode = len(files[name]), 0o644
                tar.addfile(info, io.BytesIO(files[name]))
            else:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
    return buf.getvalue()


class RemoteRun:
    """The remote load generator's container, its lines, and its run directory mirrored into ``out``."""

    def __init__(self, out: Path, run_id: str | None) -> None:
        self.out = out
        self.run_id = run_id  # known from the start when resuming, else from the first copy
        self.container: Any = None
        self.exit_code: int | None = None
        self.error: str | None = None  # the remote run's own one line ("benchlab: ..."), shown once, by us
        self.lost: str | None = None
        self._logs: threading.Thread | None = None

    def follow(self) -> None:
        """Shows its lines and copies its results until it exits (or its host stops answering)."""
        self._logs = threading.Thread(target=self._show_logs, name="benchlab-loadgen-logs", daemon=True)
        self._logs.start()
        while True:
            try:
                self.container.reload()
                running = self.container.status in ("created", "running")
                self.sync(whole=not running)
            except ENGINE_ERRORS as exc:
                self._lose(exc)
                return
            if not running:
                self.exit_code = int(self.container.attrs["State"]["ExitCode"])
                self._logs.join(timeout=10)
                return
            time.sleep(SYNC_INTERVAL_S)

    def stop(self) -> None:
        """SIGTERM to the remote run (it writes its last row and an ``interrupted`` run.json), then all back here."""
        if self.container is None or self.lost:
            return
        _say("benchlab: stopping the load generator; its results are copied here")
        try:
            self.container.kill(signal="SIGTERM")
            self.exit_code = int(self.container.wait(timeout=STOP_WAIT_S).get("StatusCode", 130))
            self.sync(whole=True)
        except ENGINE_ERRORS as exc:
            self._lose(exc)
        if self._logs is not None:
            self._logs.join(timeout=10)

    def _lose(self, exc: BaseException) -> None:
        self.lost = _why(exc)  # its one line comes from the lab's watch (HostsLab._check_alive)

    def _show_logs(self) -> None:
        with contextlib.suppress(*ENGINE_ERRORS):
            pending = b""
            for chunk in self.container.logs(stream=True, follow=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").rstrip("\r")
                    if line.startswith("benchlab: "):  # its one line: said once, by this process
                        self.error = line.removeprefix("benchlab: ")
                    else:
                        print(line, file=sys.stderr, flush=True)

    def sync(self, whole: bool) -> None:
        """Copies the run directory here: results.csv and run.json, or (``whole``) every file of it."""
        if whole or self.run_id is None:
            self._copy_tree()
            return
        for name in (CSV_NAME, RUN_JSON):
            data = self._read(f"{REMOTE_OUT}/{self.run_id}/{name}")
            if data is not None:
                _write(self.out / self.run_id / name, data)

    def _read(self, path: str) -> bytes | None:
        """One file's content; results.csv up to its last whole row."""
        import docker.errors

        try:
            stream, _ = self.container.get_archive(path)
        except docker.errors.NotFound:
            return None
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            fh = tar.extractfile(member) if member is not None else None
            data = fh.read() if fh is not None else None
        if data is not None and path.endswith(CSV_NAME):
            data = data[: data.rfind(b"\n") + 1]
        return data

    def _copy_tree(self) -> None:
        stream, _ = self.container.get_archive(REMOTE_OUT)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts[1:]  # below the folder itself
                if not parts or not member.isfile() or any(p in ("..", "") for p in parts) or parts[0].startswith("."):
                    continue
                self.run_id = self.run_id or parts[0]
                if parts[0] != self.run_id:
                    continue
                fh = tar.extractfile(member)
                if fh is not None:
                    data = fh.read()
                    if parts[-1] == CSV_NAME:
                        data = data[: data.rfind(b"\n") + 1]
                    _write(self.out.joinpath(*parts), data)

    def finish(self, lab: HostsLab) -> Path | None:
        """run.json here completed: every host's record, and an honest status when the remote could not
        write its own (its host lost); None when the remote never made a run directory."""
        if self.run_id is None or not (self.out / self.run_id / RUN_JSON).is_file():
            return None
        run_dir = self.out / self.run_id
        meta = read_run_json(run_dir)
        lab.annotate(meta)
        record = lab.record["loadgen"]
        record["exit_code"] = self.exit_code
        if self.lost:
            lab.record["lost"].setdefault("loadgen", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if meta.get("status") == "running":  # the remote run never wrote its end
            from benchlab.runner import now

            why = f"the loadgen host stopped answering: {self.lost}; the rows up to the last copy are kept"
            meta.update(status="partial", finished_at=now(), error=why)
        write_run_json(run_dir, meta)
        return run_dir


def _write(path: Path, data: bytes) -> None:
    """Replaces ``path`` whole (temp file, rename): a reader here never sees half a copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)

