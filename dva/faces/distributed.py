"""`dva faces --workers N`: one video per task on a dask.distributed LocalCluster of N single-threaded processes
(dlib's detector is single-threaded: processes, not threads, use the cores). Each worker builds the detector once."""

from __future__ import annotations

from pathlib import Path

from dva.cluster import completed
from dva.errors import DataError, DvaError, first_line


def face_task(name: str, video: str, label: str, root: str, settings) -> dict:
    """Runs on a worker: one video's crops; {"record": FaceRecord dict} or {"failed": reason}."""
    from dva.faces.stage import failure_reason, faces_for_video

    try:
        return {"record": faces_for_video(Path(video), Path(root), settings, name=name, label=label).as_dict()}
    except DataError as exc:
        return {"failed": failure_reason(exc, Path(video))}


def faces_distributed(jobs: list, root: Path, workers: int, report, progress: bool) -> None:
    """Spread jobs ((name, path, label, settings) each) over `workers` processes and add what they did to report."""
    from dask.distributed import Client, LocalCluster
    from tqdm import tqdm

    from dva.faces.stage import FaceRecord

    try:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    except (OSError, TimeoutError) as exc:
        raise DvaError(f"cannot start a local Dask cluster of {workers} workers ({exc})") from None
    client = Client(cluster)
    try:
        futures = [client.submit(face_task, name, str(video.resolve()), label, str(root.resolve()), settings, pure=False) for name, video, label, settings in jobs]
        labels = {future.key: label for future, (_, _, label, _) in zip(futures, jobs)}
        for future in tqdm(completed(client, futures), total=len(futures), desc="faces", unit="video", disable=not progress):
            try:
                part = future.result()
            except Exception as exc:  # a worker died (or a bug on it): that video fails alone
                report.failed[labels[future.key]] = f"worker error: {type(exc).__name__}: {first_line(exc)}"
                continue
            if "failed" in part:
                report.failed[labels[future.key]] = part["failed"]
            else:
                report.add(FaceRecord(**part["record"]))
    finally:
        client.close()
        cluster.close()
