"""LocalStack lifecycle against a real LocalStack: no mocks of LocalStack, boto3 or processes.

One LocalStack serves the session (the `localstack` fixture); the lifecycle test starts and
stops a second one on a free port in its own lab. Refusal tests never open a connection to a
non-loopback address (a tripwire on socket.connect proves it).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from hsm_lab.aws import localstack as ls
from hsm_lab.aws.localstack import LocalStack, LocalStackError
from tests.support import free_port

HOME_REGION = "eu-west-3"
REPLICA_REGION = "eu-central-1"
ENV_VARS = ("CLEFS_LOCALSTACK_ENDPOINT", "AWS_ENDPOINT_URL", "LOCALSTACK_HOST", "USE_SSL")



@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to connect anywhere."""

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"unexpected connection to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


# --------------------------------------------------------------------- the shared LocalStack


def test_health_ok(localstack: LocalStack) -> None:
    assert ls.is_loopback(localstack.endpoint)
    report = localstack.health()
    assert ls.is_healthy(report)
    assert report is not None and report["services"]["kms"] in ("available", "running")


def test_health_probe_never_turns_tls_verification_off(localstack: LocalStack, tmp_path: Path) -> None:
    """https with the lab's CA is verified; without a CA a loopback probe goes over plain http
    on the same port; a CA that did not sign LocalStack's certificate gets no answer."""
    https = "https://" + localstack.endpoint.split("://", 1)[1]
    assert ls.is_healthy(ls.health(https))  # no CA: plain http to loopback
    assert localstack.ca is not None
    assert ls.is_healthy(ls.health(https, ca=localstack.ca))
    ls.ensure_tls(tmp_path / "other")  # a valid CA, but not the one that signed LocalStack's certificate
    assert ls.health(https, ca=ls.paths(tmp_path / "other").ca) is None


def test_kms_key_in_eu_west_3(localstack: LocalStack) -> None:
    kms = localstack.client("kms", HOME_REGION)
    key = kms.create_key(Description="clefs test key")["KeyMetadata"]
    assert key["Arn"].startswith(f"arn:aws:kms:{HOME_REGION}:")
    blob = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"clefs")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"clefs"


def test_multi_region_key_replicated_to_eu_central_1(localstack: LocalStack) -> None:
    home = localstack.client("kms", HOME_REGION)
    replica_kms = localstack.client("kms", REPLICA_REGION)
    primary = home.create_key(MultiRegion=True, Description="clefs mrk")["KeyMetadata"]
    assert primary["KeyId"].startswith("mrk-")
    replica = home.replicate_key(KeyId=primary["KeyId"], ReplicaRegion=REPLICA_REGION)
    replica_arn = replica["ReplicaKeyMetadata"]["Arn"]
    assert f":{REPLICA_REGION}:" in replica_arn
    assert replica_arn.endswith(primary["KeyId"])

    blob = home.encrypt(KeyId=primary["KeyId"], Plaintext=b"across regions")["CiphertextBlob"]
    clear = replica_kms.decrypt(CiphertextBlob=blob, KeyId=replica_arn)
    assert clear["Plaintext"] == b"across regions"
    assert clear["KeyId"] == replica_arn


def test_s3_round_trip(localstack: LocalStack) -> None:
    s3 = localstack.client("s3", HOME_REGION)
    bucket = f"clefs-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": HOME_REGION})
    try:
        s3.put_object(Bucket=bucket, Key="a/b.bin", Body=b"\x00clefs\xff")
        assert s3.get_object(Bucket=bucket, Key="a/b.bin")["Body"].read() == b"\x00clefs\xff"
        location = s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]
        assert location == HOME_REGION
    finally:
        s3.delete_object(Bucket=bucket, Key="a/b.bin")
        s3.delete_bucket(Bucket=bucket)


# --------------------------------------------------------------------- endpoint resolution


def test_endpoint_follows_localstack_client_conventions(clean_env: pytest.MonkeyPatch) -> None:
    from localstack_client import config

    assert ls.configured_endpoint() == ls.Endpoint("http://localhost:4566", "default")
    clean_env.setenv("LOCALSTACK_HOST", "127.0.0.1:4599")
    assert ls.configured_endpoint() == ls.Endpoint("http://127.0.0.1:4599", "LOCALSTACK_HOST")
    clean_env.setenv("USE_SSL", "1")
    assert ls.configured_endpoint().url == "https://127.0.0.1:4599"
    assert ls.configured_endpoint().url == config.get_service_endpoint("s3")
    clean_env.setenv("AWS_ENDPOINT_URL", "http://127.0.0.2:4566/")
    assert ls.configured_endpoint() == ls.Endpoint("http://127.0.0.2:4566", "AWS_ENDPOINT_URL")
    clean_env.setenv("CLEFS_LOCALSTACK_ENDPOINT", "http://[::1]:4577")
    endpoint = ls.configured_endpoint()
    assert endpoint == ls.Endpoint("http://[::1]:4577", "CLEFS_LOCALSTACK_ENDPOINT")
    assert endpoint.external and endpoint.port == 4577


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:4566",
        "http://192.168.1.10:4566",
        "http://192.0.2.1:4566",
        "https://example.com",
        "http://localhost.localstack.cloud:4566",
        "http://[2001:db8::1]:4566",
        "http://0.0.0.0:4566",
    ],
)
@pytest.mark.parametrize("variable", ["CLEFS_LOCALSTACK_ENDPOINT", "AWS_ENDPOINT_URL"])
def test_non_loopback_endpoint_refused(
    url: str, variable: str, clean_env: pytest.MonkeyPatch, no_network: None, tmp_path: Path
) -> None:
    clean_env.setenv(variable, url)
    with pytest.raises(LocalStackError, match="not loopback") as caught:
        with ls.running(tmp_path):
            pass
    assert "\n" not in str(caught.value)
    with pytest.raises(LocalStackError, match="not loopback"):
        ls.health(url)
    assert ls.check_endpoint(url, allow_remote=True) == url.rstrip("/")
    assert not (tmp_path / "localstack").exists()


@pytest.mark.parametrize("url", ["http://127.0.0.1:4566", "http://127.3.4.5:1", "http://[::1]:9"])
def test_loopback_endpoints_accepted(url: str, no_network: None) -> None:
    assert ls.check_endpoint(url) == url


def test_unreachable_endpoint_is_one_line_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    clean_env.setenv("CLEFS_LOCALSTACK_ENDPOINT", url)
    with pytest.raises(LocalStackError) as caught:
        with ls.running(tmp_path):
            pass
    message = str(caught.value)
    assert url in message and "not reachable" in message and "\n" not in message
    assert not (tmp_path / "localstack").exists()  # nothing started for an explicit endpoint

    cli = subprocess.run(
        [sys.executable, "-m", "hsm_lab", "localstack", "start", "--lab", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CLEFS_LOCALSTACK_ENDPOINT": url, "COLUMNS": "60"},
        check=False,
    )
    assert cli.returncode == 1
    assert "Traceback" not in cli.stderr + cli.stdout
    assert cli.stderr.strip().count("\n") == 0 and "not reachable" in cli.stderr


def test_port_in_use_is_refused(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(LocalStackError, match=f"port {port} is already in use") as caught:
            ls.start(tmp_path, port)
    assert "CLEFS_LOCALSTACK_ENDPOINT" in str(caught.value) and "\n" not in str(caught.value)
    assert not ls.paths(tmp_path).pid.exists()


# --------------------------------------------------------------------- lifecycle


def test_ensure_venv_is_idempotent() -> None:
    python = ls.ensure_venv()
    began = time.monotonic()
    assert ls.ensure_venv() == python
    assert time.monotonic() - began < 5
    assert (
        subprocess.run(
            [str(python), "-c", "import sys; assert sys.version_info >= (3, 12)"], check=False
        ).returncode
        == 0
    )


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses that are not loopback (from the kernel's routing table)."""
    found: set[str] = set()
    # /proc/net/fib_trie lists "/32 host LOCAL" right after each address of this machine
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    for previous, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            address = previous.strip().split()[-1]
            if not address.startswith("127."):
                found.add(address)
    for row in Path("/proc/net/if_inet6").read_text().splitlines():
        raw, _index, _prefix, scope = row.split()[:4]
        if scope == "00":  # global scope only (no ::1, no link-local that needs an interface)
            found.add(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(raw)))
    return sorted(found)


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by `pid` or its children."""
    inodes: set[str] = set()
    todo, seen = [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for fd in Path(f"/proc/{current}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        todo += [int(child) for child in children]
    found = []
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            host, port = local.split(":")
            raw = bytes.fromhex(host)
            if family == 4:
                address = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                address = socket.inet_ntop(socket.AF_INET6, words)
            found.append((address, int(port, 16)))
    return found


SECRETS = {
    "CLEFS_USER_PIN": "user-pin-canary-4711",
    "CLEFS_SO_PIN": "so-pin-canary-4712",
    "AWS_ACCESS_KEY_ID": "AKIACANARYCANARY0000",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-canary-4713",
    "MY_DB_PIN": "other-pin-canary-4714",
}


def test_running_starts_and_stops_what_it_started(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port = free_port()
    clean_env.setenv("LOCALSTACK_HOST", f"127.0.0.1:{port}")
    for name, value in SECRETS.items():
        clean_env.setenv(name, value)
    files = ls.paths(tmp_path)
    with ls.running(tmp_path) as instance:
        assert instance.owned and instance.pid is not None
        assert instance.endpoint == f"http://127.0.0.1:{port}"
        pid = instance.pid
        # its environment is the allow-list plus LocalStack's own settings: no PIN, no CLEFS_*,
        # no AWS credential, none of the canaries' values anywhere
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        names = {entry.split(b"=", 1)[0].decode() for entry in environ.split(b"\0") if entry}
        assert not [n for n in names if n.startswith(("CLEFS_", "AWS_")) or "PIN" in n.upper()], names
        for value in SECRETS.values():
            assert value.encode() not in environ
        assert b"GATEWAY_SERVER=hypercorn" in environ
        # it listens on 127.0.0.1 only, and only on its port
        sockets = listening_sockets(pid)
        assert sockets and all(address == "127.0.0.1" for address, _ in sockets), sockets
        assert {p for _, p in sockets} == {port}, sockets
        # from a non-loopback address of this machine, the port is closed
        for address in non_loopback_addresses():
            family = socket.AF_INET6 if ":" in address else socket.AF_INET
            with socket.socket(family) as probe, pytest.raises(ConnectionRefusedError):
                probe.settimeout(2)
                probe.connect((address, port))
        # the lab's certificate: key files private, served by LocalStack, issued by the lab CA
        assert instance.ca == files.ca and (files.tls.stat().st_mode & 0o777) == 0o700
        for secret in (files.server_pem, files.tls / "server.pem.key"):
            assert (secret.stat().st_mode & 0o777) == 0o600, secret
        import ssl

        context = ssl.create_default_context(cafile=str(files.ca))
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        record = json.loads(files.pid.read_text())
        assert record["pid"] == pid and record["port"] == port
        assert record["endpoint"] == instance.endpoint
        assert ls.is_healthy(instance.health())
        assert (files.data / "var").is_dir()  # FILESYSTEM_ROOT is the lab's data dir
        state = ls.status(tmp_path)
        assert state.healthy and state.pid == pid and state.pid_alive and state.rss_bytes
        again = ls.start(tmp_path, port)  # already running: same process, not ours to stop
        assert again.pid == pid and not again.owned
        bucket = instance.client("s3", HOME_REGION)
        assert "Buckets" in bucket.list_buckets()
    assert not files.pid.exists()
    assert _gone(pid)
    # the log is kept ("Ready." may not be flushed yet when health already answers: not asserted)
    assert "localstack" in files.log.read_text()
    assert ls.stop(tmp_path).outcome == "not-running"
    assert ls.health(f"http://127.0.0.1:{port}", timeout=0.5) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["sleep", "60"],
        # cmdline says LocalStack, but it is not this lab's (no FILESYSTEM_ROOT of ours)
        [sys.executable, "-c", "import time; time.sleep(60)", "localstack.runtime.main"],
    ],
)
def test_stop_leaves_a_foreign_pid_alone(argv: list[str], tmp_path: Path) -> None:
    stranger = subprocess.Popen(argv, start_new_session=True)
    try:
        files = ls.paths(tmp_path)
        files.dir.mkdir(parents=True)
        files.pid.write_text(json.dumps({"pid": stranger.pid, "port": 4566}))
        result = ls.stop(tmp_path, timeout=1)
        assert result == ls.Stopped("not-ours", stranger.pid)
        assert stranger.poll() is None  # still running: never signalled
        assert not files.pid.exists()
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)
        stranger.wait()


def test_stale_pid_file_is_cleaned(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    files = ls.paths(tmp_path)
    files.dir.mkdir(parents=True)
    files.pid.write_text(json.dumps({"pid": dead.pid, "port": 4566}))
    assert ls.stop(tmp_path) == ls.Stopped("stale", dead.pid)
    assert not files.pid.exists()


def test_a_server_with_another_certificate_is_refused(localstack: LocalStack, tmp_path: Path) -> None:
    """An impostor on a loopback port, with a certificate for the right names from another CA."""
    import ssl
    import threading

    from hsm_lab import errors
    from hsm_lab.aws.deployment import pin_localstack_tls

    impostor_lab = tmp_path / "impostor"
    ls.ensure_tls(impostor_lab)  # a perfectly valid CA and server certificate, but not ours
    files = ls.paths(impostor_lab)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(files.server_pem)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = listener.accept()
                with server_side.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert localstack.ca is not None
        with pytest.raises(errors.ClefsError, match="not issued by the lab's CA") as caught:
            pin_localstack_tls(f"http://127.0.0.1:{port}", tmp_path, ca=localstack.ca)
        assert "\n" not in str(caught.value)
        # and the real LocalStack passes the same check
        pin = pin_localstack_tls(localstack.endpoint, tmp_path, ca=localstack.ca)
        assert pin.pem == localstack.ca.resolve() and pin.url.startswith("https://127.0.0.1:")
    finally:
        listener.close()
        thread.join(timeout=5)


def test_no_pin_without_a_known_ca(
    localstack: LocalStack, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    from hsm_lab import errors
    from hsm_lab.aws.deployment import pin_localstack_tls

    clean_env.delenv(ls.CA_ENV, raising=False)
    with pytest.raises(errors.ClefsError, match="cannot pin LocalStack's TLS certificate"):
        pin_localstack_tls(localstack.endpoint, tmp_path / "stranger")
