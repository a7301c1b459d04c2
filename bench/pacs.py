"""The PACS path measured: storescu -> Orthanc -> forwarder -> /segment -> SEG back in Orthanc.

Needs Debian's orthanc, orthanc-python and dcmtk (``make system-deps``); uses
the end-to-end tests' harness (``tests/deploy/pacs.py``) and the service as
``make run`` starts it, on loopback. Reports:

- throughput: SEGs per second for a burst over 1 and over 3 parallel associations;
- latency: from the end of one instance's C-STORE to its SEG being in Orthanc,
  instances sent one at a time with a pause (p50 / p99 / max);
- recovery: the service stopped mid-burst for ``--outage`` seconds, then started
  again: seconds from its readiness to the last SEG, and whether any was lost;
- series: ``--series`` slices of one CT series in the default series mode: from
  the end of their C-STOREs to the one SEG in Orthanc, and its size.

    python -m bench.pacs                       # default model, 512 px CT slices
    python -m bench.pacs --count 10 --size 128 --outage 3    # a quick run
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pydicom

from bench.report import report
from tests.conftest import Server, free_port, start_server, stop_server
from tests.deploy.pacs import Orthanc, ct_series, missing_tools

REPO = Path(__file__).resolve().parents[1]


def orthanc_id(pacs: Orthanc, sop_instance_uid: str) -> str:
    found = httpx.post(f"{pacs.url}/tools/lookup", content=sop_instance_uid, timeout=30).json()
    return str(next(item["ID"] for item in found if item["Type"] == "Instance"))


def done_count(pacs: Orthanc) -> int:
    """SEGs in Orthanc: every instance the benchmark sends is a CT that gets one.

    One cheap call (GET /statistics), so that polling takes no CPU from the service.
    """
    return int(pacs.get("/statistics")["CountInstances"]) // 2


def wait_all(pacs: Orthanc, expected: int, timeout_s: float) -> float:
    """Seconds until ``expected`` SEGs are in Orthanc (polling every 50 ms)."""
    began = time.monotonic()
    while done_count(pacs) < expected:
        if time.monotonic() - began > timeout_s:
            raise SystemExit(f"only {done_count(pacs)} of {expected} done after {timeout_s} s")
        time.sleep(0.05)
    return time.monotonic() - began


def burst(
    pacs: Orthanc, folder: Path, associations: int, count: int, size: int
) -> dict[str, float]:
    """``associations`` parallel storescu runs of ``count`` instances each; SEGs per second."""
    series = [ct_series(folder / f"a{k}", count, size=size) for k in range(associations)]
    already = done_count(pacs)
    began = time.monotonic()
    threads = [threading.Thread(target=pacs.store, args=(files,)) for files in series]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = time.monotonic() - began
    total = wait_all(pacs, already + associations * count, 1800) + stored
    segs = associations * count
    return {
        "associations": associations,
        "instances": segs,
        "seconds": total,
        "segs_per_s": segs / total,
    }


def latency(pacs: Orthanc, folder: Path, count: int, size: int, pause_s: float) -> dict[str, float]:
    """One instance at a time: end of its C-STORE -> its outcome recorded in Orthanc."""
    seconds = []
    for path in ct_series(folder, count, size=size):
        pacs.store([path])
        stored = time.monotonic()
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        instance = orthanc_id(pacs, str(uid))
        while pacs.outcome(instance) is None:
            time.sleep(0.02)
        seconds.append(time.monotonic() - stored)
        time.sleep(pause_s)
    ordered = sorted(seconds)
    return {
        "instances": count,
        "p50_s": statistics.median(ordered),
        "p99_s": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "max_s": ordered[-1],
    }


def recovery(
    pacs: Orthanc, service: Server, folder: Path, args: argparse.Namespace
) -> tuple[dict[str, float], Server]:
    """Stop the service with a burst pending, wait ``args.outage`` s, start it again."""
    already = done_count(pacs)
    pacs.store(ct_series(folder, args.count, size=args.size))
    stop_server(service)
    time.sleep(args.outage)
    restarted = time.monotonic()
    service = serve(args.model, int(service.url.rsplit(":", 1)[1]), folder / "service.log")
    ready = time.monotonic() - restarted
    to_first = wait_all(pacs, done_count(pacs) + 1, 600)
    to_last = to_first + wait_all(pacs, already + args.count, 1800)
    outcomes = [str(i["metadata"].get("UnetSegmentation", "")) for i in pacs.instances()]
    figures: dict[str, float] = {
        "outage_s": args.outage,
        "service_start_s": ready,
        "ready_to_first_seg_s": to_first,
        "ready_to_last_seg_s": to_last,
        "instances_with_seg": sum(o.startswith("seg") for o in outcomes),
        "segs_expected": already + args.count,
    }
    return figures, service


def serve(model: Path, port: int, log: Path) -> Server:
    env = {"UNET_MODEL_PATH": str(model), "UNET_LOG_LEVEL": "warning"}
    return start_server(env, log, port=port)


def series(service: Server, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One series of ``args.series`` slices in the default series mode: from the end of its
    C-STOREs to its one SEG in Orthanc (StableAge 2 s included), and the SEG's size."""
    pacs = Orthanc(workdir / "orthanc-series", forwarder={"ServiceUrl": service.url})
    pacs.start()
    try:
        files = ct_series(workdir / "series", args.series, size=args.size)
        pacs.store(files)
        stored = time.monotonic()
        while True:
            segs = [
                i
                for i in pacs.instances()
                if i["metadata"].get("SopClassUid", "").endswith(".66.4")
            ]
            if segs:
                break
            if time.monotonic() - stored > 1800:
                raise SystemExit("no SEG after 30 minutes")
            time.sleep(0.2)
        seconds = time.monotonic() - stored
        size = len(pacs.file(segs[0]["id"]))
        return {
            "slices": args.series,
            "stable_age_s": 2,
            "last_store_to_seg_s": round(seconds, 2),
            "seg_bytes": size,
            "segs": len(segs),
        }
    finally:
        pacs.stop()


def run(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    service = serve(args.model, free_port(), workdir / "service.log")
    # The per-instance mode for throughput and latency per instance; series below.
    forwarder = {"ServiceUrl": service.url, "Trigger": "instance"}
    pacs = Orthanc(workdir / "orthanc", forwarder=forwarder)
    pacs.start()
    try:
        results: dict[str, Any] = {"model": str(args.model), "size": args.size}
        results["warm-up"] = burst(pacs, workdir / "warm", 1, 2, args.size)
        results["latency"] = latency(pacs, workdir / "latency", args.count, args.size, args.pause)
        results["one_association"] = burst(pacs, workdir / "one", 1, args.count, args.size)
        results["three_associations"] = burst(pacs, workdir / "three", 3, args.count, args.size)
        results["recovery"], service = recovery(pacs, service, workdir / "recovery", args)
        results["orthanc_stop"] = dict(zip(("status", "seconds"), pacs.stop(), strict=True))
        results["series"] = series(service, workdir, args)
        return results
    finally:
        pacs.stop()
        stop_server(service)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "model" / "unet.onnx")
    parser.add_argument("--size", type=int, default=512, help="CT slice side, px")
    parser.add_argument(
        "--count", type=int, default=30, help="instances per association and per scenario"
    )
    parser.add_argument(
        "--pause", type=float, default=0.5, help="seconds between instances (latency)"
    )
    parser.add_argument(
        "--outage", type=float, default=10.0, help="seconds the service is down (recovery)"
    )
    parser.add_argument("--series", type=int, default=100, help="slices of the series scenario")
    parser.add_argument("--json", type=Path, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if missing_tools():
        raise SystemExit(f"needs Debian's {', '.join(missing_tools())}: make system-deps")
    with tempfile.TemporaryDirectory(prefix="bench-pacs-") as tmp:
        results = run(Path(tmp), args)
    report(results, args.json)


if __name__ == "__main__":
    main()
