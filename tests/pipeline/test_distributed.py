"""`dva extract --scheduler` on a Dask cluster secured with TLS: the address goes to Dask unchanged and
Dask's own configuration (`distributed.comm.tls.*`) supplies the certificates."""

import os
import subprocess
import sys
from pathlib import Path

import dask
from typer.testing import CliRunner

from dva.cli import app
from tests.pipeline.test_extract import TINY, _free_port, assert_stores_equal


def make_certificates(folder: Path) -> dict[str, Path]:
    """A throwaway CA and one certificate it signed for 127.0.0.1, shared by scheduler, worker and client."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key, cert, key, request = (folder / name for name in ("ca.pem", "ca.key", "node.pem", "node.key", "node.csr"))
    extensions = folder / "node.ext"
    # Python's ssl checks the extensions (a CA that may sign, a leaf for both ends of a connection)
    extensions.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                          "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1\n"
                          "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    for command in (
        ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "1", "-subj", "/CN=dva test CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", request, "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert, "-days", "1", "-extfile", extensions],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return {"ca": ca, "cert": cert, "key": key}


def test_extract_through_a_dask_scheduler_and_worker_over_tls(synth_data, tiny_store, tmp_path):
    certs = make_certificates(tmp_path / "tls")
    port = _free_port()
    address = f"tls://127.0.0.1:{port}"
    dask_cli = Path(sys.executable).parent / "dask"
    tls = ["--tls-ca-file", str(certs["ca"]), "--tls-cert", str(certs["cert"]), "--tls-key", str(certs["key"])]
    # scheduler and worker unpickle this checkout's dva, not whichever one the environment installed
    here = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")]))}
    # the client's half comes from Dask's own configuration (the same keys as DASK_DISTRIBUTED__COMM__TLS__... or a YAML file)
    client_tls = {"distributed.comm.tls.ca-file": str(certs["ca"]), "distributed.comm.tls.client.cert": str(certs["cert"]),
                  "distributed.comm.tls.client.key": str(certs["key"]), "distributed.comm.require-encryption": True}
    scheduler = subprocess.Popen([str(dask_cli), "scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard", *tls],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=here)
    worker = subprocess.Popen([str(dask_cli), "worker", address, "--no-nanny", "--nthreads", "1", "--no-dashboard", *tls],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=here)
    try:
        command = ["extract", "--data", str(synth_data), "--split", "val", *TINY, "--scheduler", address]
        refused = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "refused")])  # no certificate, no cluster
        assert refused.exit_code == 2, refused.output
        last = refused.stderr.strip().splitlines()[-1]  # after the scan's progress bar
        assert last.startswith("dva: error:") and address in last and "distributed.comm.tls" in last
        out = tmp_path / "tls-store"
        with dask.config.set(client_tls):
            plain = CliRunner().invoke(app, [*command[:-1], address.replace("tls://", "tcp://"), "--out", str(tmp_path / "plain")])
            done = CliRunner().invoke(app, [*command, "--out", str(out)])
        assert plain.exit_code == 2 and "require-encryption" in plain.stderr.strip().splitlines()[-1], plain.output  # TLS required: tcp:// refused
        assert done.exit_code == 0, done.output
        assert_stores_equal(out, tiny_store, "val", exact=False)  # single-threaded worker
    finally:
        for process in (worker, scheduler):
            stop(process)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL: a worker closing gracefully on a loaded machine can outlast any patience."""
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(15)


# --- which GPU a worker takes ----------------------------------------------------------------------


def test_each_local_worker_takes_its_own_gpu_and_an_explicit_device_is_kept():
    from dva.cluster import worker_device

    assert [worker_device("cuda", 2, name, f"tcp://h:{name}", None, local=True) for name in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert [worker_device(None, 4, name, "tcp://h:1", "0,1,2,3", local=True) for name in range(2)] == ["cuda:0", "cuda:1"]  # our own cluster: by index
    assert worker_device("cuda:1", 4, 0, "tcp://h:1", None, local=True) == "cuda:1"
    assert worker_device("cpu", 4, 3, "tcp://h:1", None, local=True) == "cpu"
    assert worker_device(None, 0, 3, "tcp://h:1", None, local=True) == "cpu"


def test_workers_of_another_cluster_follow_cuda_visible_devices_then_their_name_then_their_address():
    from dva.cluster import worker_device

    # dask-cuda gives each worker a CUDA_VISIBLE_DEVICES that lists its own GPU first: cuda:0 is that one
    assert worker_device("cuda", 4, "gpu-worker-2", "tcp://h:9", "2,3,0,1") == "cuda:0"
    assert worker_device("cuda", 4, 3, "tcp://h:9", "3,0,1,2") == "cuda:0"
    assert worker_device("cuda", 4, 3, "tcp://h:9", None) == "cuda:3"
    addresses = [f"tcp://10.0.0.1:{port}" for port in range(40000, 40016)]
    chosen = [worker_device("cuda", 4, f"w-{a}", a, None) for a in addresses]
    assert chosen == [worker_device("cuda", 4, f"w-{a}", a, None) for a in addresses]  # stable
    assert len(set(chosen)) > 1, "workers with names that are not numbers all took one GPU"
