"""PostgreSQL for the team services: our own server from ``initdb``, and a role and database per
service on it (or on an existing server).

Our own server is initialised with a superuser password (``--auth=scram-sha-256``), so no line
of its ``pg_hba.conf`` ever says ``trust``, not even for loopback: the superuser may connect
from this host only, and each service's role only to its own database, from anywhere, with its
password (scram-sha-256). The server runs as the ``postgres`` user when ganops runs as root
(PostgreSQL refuses to run as root), and listens on the bind address and 127.0.0.1.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from gan_models.errors import GanopsError
from gan_models.services.processes import spawn
from gan_models.services.state import STATE_DIR, Service, record

# Each service's role is also the name of its database.
DATABASES = ("prefect", "mlflow", "mlflow_auth", "optuna")
PG_VERSIONS = ("17", "16", "15", "14", "13")


def pg_bin(name: str) -> str:
    """A PostgreSQL program: on PATH, else under Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which(name)
    if found:
        return found
    for v in PG_VERSIONS:
        p = Path(f"/usr/lib/postgresql/{v}/bin/{name}")
        if p.is_file():
            return str(p)
    raise GanopsError(f"{name}: not found; install the PostgreSQL server binaries (15 or newer)")


def _run_as() -> str | None:
    """The user our PostgreSQL runs as: 'postgres' when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise GanopsError("running as root needs a 'postgres' user to run PostgreSQL as") from None
    return "postgres"


def _give(path: Path, user: str | None) -> None:
    if user:
        pw = pwd.getpwnam(user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def hba_lines(superuser: str) -> str:
    """pg_hba.conf: password (scram-sha-256) everywhere, the superuser from this host only."""
    lines = [
        "# written by ganops up --team: no trust lines; a role per service, to its own database",
        f"local all {superuser} scram-sha-256",
        f"host all {superuser} 127.0.0.1/32 scram-sha-256",
        f"host all {superuser} ::1/128 scram-sha-256",
    ]
    for db in DATABASES:
        lines += [f"host {db} {db} 0.0.0.0/0 scram-sha-256", f"host {db} {db} ::/0 scram-sha-256"]
    return "\n".join(lines) + "\n"


def init_cluster(data_dir: Path, superuser: str, password: str) -> bool:
    """``initdb`` into ``data_dir`` unless it already holds a cluster; True if it did."""
    if (data_dir / "PG_VERSION").is_file():
        return False
    user = _run_as()
    data_dir.mkdir(parents=True, exist_ok=True)
    if any(data_dir.iterdir()):
        raise GanopsError(f"{data_dir}: not empty and not a PostgreSQL data directory")
    os.chmod(data_dir, 0o700)
    _give(data_dir, user)
    if user:
        # initdb runs as postgres, which must be able to reach the data directory
        uid = pwd.getpwnam(user).pw_uid
        for parent in data_dir.resolve().parents:
            st = parent.stat()
            if not (st.st_mode & 0o001 or st.st_uid == uid):
                raise GanopsError(
                    f"{data_dir}: the {user} user cannot reach it ({parent} is mode "
                    f"{stat.S_IMODE(st.st_mode):o}); choose postgres.data_dir elsewhere"
                )
    fd, pwfile = tempfile.mkstemp(prefix="ganops-pw-", dir=data_dir.parent)
    try:
        os.write(fd, (password + "\n").encode())
        os.close(fd)
        _give(Path(pwfile), user)
        cmd = [
            pg_bin("initdb"), "-D", str(data_dir), "-U", superuser, "--pwfile", pwfile,
            "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
        ]  # fmt: skip
        ids = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **ids)
    finally:
        Path(pwfile).unlink(missing_ok=True)
    if out.returncode:
        raise GanopsError(f"initdb {data_dir} failed:\n{(out.stdout + out.stderr)[-2000:]}")
    return True


def write_hba(data_dir: Path, superuser: str) -> None:
    hba = data_dir / "pg_hba.conf"
    tmp = hba.with_name(".pg_hba.conf.tmp")
    tmp.write_text(hba_lines(superuser))
    os.chmod(tmp, 0o600)
    _give(tmp, _run_as())
    tmp.replace(hba)


def start_server(
    root: Path, data_dir: Path, bind: str, port: int, superuser: str, password: str, timeout: float
) -> Service:
    """Our PostgreSQL on ``bind`` and 127.0.0.1, returned once the superuser can connect."""
    from gan_models.tracking.server import wait_until_ready

    write_hba(data_dir, superuser)
    addresses = ",".join(dict.fromkeys(["127.0.0.1", bind]))
    log = root / STATE_DIR / "logs" / "postgres.log"
    cmd = [
        pg_bin("postgres"), "-D", str(data_dir), "-p", str(port), "-c",
        f"listen_addresses={addresses}", "-c", f"unix_socket_directories={data_dir}",
        "-c", "password_encryption=scram-sha-256",
    ]  # fmt: skip
    # the log is opened here and handed over, so the postgres user needs no access to it
    proc = spawn(cmd, {**os.environ, "LC_ALL": "C.UTF-8"}, data_dir, log, user=_run_as())
    wait_until_ready(
        lambda: can_connect("127.0.0.1", port, superuser, password, "postgres"),
        proc, "postgres", log, timeout,
    )  # fmt: skip
    return record("postgres", proc, log, url=f"postgresql://{bind}:{port}", port=port)


def connect(host: str, port: int, user: str, password: str, dbname: str, timeout: int = 5):
    import psycopg2

    return psycopg2.connect(
        host=host, port=port, user=user, password=password, dbname=dbname,
        connect_timeout=timeout,
    )  # fmt: skip


def can_connect(host: str, port: int, user: str, password: str, dbname: str) -> bool:
    import psycopg2

    try:
        connect(host, port, user, password, dbname, timeout=2).close()
        return True
    except psycopg2.OperationalError:
        return False


def ensure_roles(
    host: str, port: int, superuser: str, password: str, role_passwords: dict[str, str]
) -> list[str]:
    """A login role and a database it owns for each service (``DATABASES``), with the given
    passwords (set again each time, so a changed secret takes effect). Returns those created."""
    from psycopg2 import sql

    created = []
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = connect(host, port, superuser, password, "postgres")
            break
        except Exception as e:  # noqa: BLE001 - retried while the server finishes starting
            if time.monotonic() > deadline:
                raise GanopsError(
                    f"postgres {host}:{port}: cannot connect as {superuser}: {e}"
                ) from None
            time.sleep(0.5)
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    try:
        with conn.cursor() as cur:
            for name in DATABASES:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(
                    sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(name)),
                    (role_passwords[name],),
                )
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if not cur.fetchone():
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(name), sql.Identifier(name)
                        )
                    )
                    created.append(name)
                # only its owner (and the superuser) may connect to a service's database
                cur.execute(
                    sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name))
                )
    finally:
        conn.close()
    return created


def url(driver: str, host: str, port: int, name: str, password: str) -> str:
    """The SQLAlchemy URL of a service's database (``driver``: postgresql, postgresql+asyncpg)."""
    return f"{driver}://{name}:{password}@{host}:{port}/{name}"


def stop_server(pid: int, timeout: float = 30.0) -> None:
    """PostgreSQL's fast shutdown (SIGINT to the postmaster alone: it stops its own children in
    order, where a signal to the whole group could leave it recovering at the next start)."""
    import signal

    from gan_models.tracking.server import _alive, stop_process

    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop_process(pid)  # still there: the whole group, SIGTERM then SIGKILL
