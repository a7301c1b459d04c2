"""The DICOM gateway measured: what it receives, and how long a series takes to come back.

Needs dcmtk (``make system-deps``); uses the gateway tests' peers (``tests/gateway/peers.py``)
and the service as ``make run`` starts it, all on loopback. Reports:

- receive: ``--series`` slices of one CT series sent by one storescu to the gateway alone
  (it only stores: its stable time is an hour), to dcmtk's storescp writing the same
  files (with its largest PDU, 128 KiB, and TCP_NODELAY=1; the gateway takes what the
  sender proposes) and to the floor of any pynetdicom SCP: pynetdicom with the gateway's
  AE settings answering every C-STORE at once, reading and storing nothing, as pynetdicom
  ships it and with the gateway's woken reactors and C-STORE responses (reactor.py,
  responses.py), and to the gateway not storing (every check of an instance, no write:
  its durable storage's cost by difference), alternately ``--repeats`` times:
  instances/s, MB/s and the shares of storescp's rate; with ``--link-mbit N``, over
  loopback shaped to an N Mbit/s link (a hospital's network rather than
  memory-to-memory; needs root and tc);
- one_per_association: 30 of those slices, each in an association of its own (a
  storescu each), to the gateway and to storescp: seconds an instance;
- series: the same series through the whole path (gateway -> service -> storescp): from
  the end of the last C-STORE to the SEG at the destination, split from the gateway's log
  into the stable wait, the service's answers (inference) and the sending; once with the
  default results (the SEG and its SR: two requests) and once with
  ``UNET_DICOM_RESULTS=seg``, side by side;
- three: three series of ``--three`` slices from three modalities at once (three storescu
  processes, calling AE titles CT1..CT3): from the last C-STORE to the third SEG.

    python -m bench.gateway                              # 100 slices of 512 px
    python -m bench.gateway --series 20 --size 128 --three 5 --repeats 1   # a quick run
    python -m bench.gateway --receive-only --link-mbit 1000   # receiving over a 1 Gbit/s link
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from app.gateway import reactor, responses
from app.gateway.receiver import TRANSFER_SYNTAXES
from bench.report import report
from tests.conftest import free_port, start_server, stop_server
from tests.deploy.pacs import ct_series
from tests.gateway.peers import TOOLS, Pacs, Process, gateway, sent, storescu, until, wait_listening

REPO = Path(__file__).resolve().parents[1]


def receiver(name: str, folder: Path) -> tuple[Process, int, str]:
    """One of the receivers measured, started: (its process, its port, its AE title)."""
    port = free_port()
    folder.mkdir(parents=True)
    peer: Process
    if name.startswith("gateway"):  # stable after an hour: it only receives here
        peer = gateway(folder, "http://127.0.0.1:9", port, stable_s=3600)
        if name == "gateway_not_storing":
            peer.command = [sys.executable, "-m", "bench.gateway", "--not-storing"]
        peer.start()
        wait_listening(port, peer)
        return peer, port, "UNET"
    if name.startswith("pynetdicom_floor"):
        command = [sys.executable, "-m", "bench.gateway", "--floor-scp", str(port)]
        command += ["--woken"] if name.endswith("woken") else []
        peer = Process(command, folder / "floor.log", {})
        peer.start()
        wait_listening(port, peer)
        return peer, port, "FLOOR"
    peer = Pacs(folder / "in", port, "--max-pdu", "131072")  # its largest PDU
    peer.start()
    time.sleep(0.5)
    return peer, port, "PACS"


def receive_rate(workdir: Path, files: list[Path], repeats: int) -> dict[str, Any]:
    """The gateway and storescp receiving the same files, alternately."""
    size = sum(f.stat().st_size for f in files)
    names = [
        "gateway", "gateway_not_storing", "storescp", "pynetdicom_floor", "pynetdicom_floor_woken"
    ]  # fmt: skip
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for attempt in range(repeats):
        for name in seconds:
            peer, port, called = receiver(name, workdir / f"receive-{name}-{attempt}")
            began = time.perf_counter()
            sent(storescu(port, files, called=called))
            seconds[name].append(time.perf_counter() - began)
            peer.stop()
    best = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "instances": len(files),
        "megabytes": round(size / 1e6, 1),
        "seconds": {name: [round(s, 3) for s in values] for name, values in seconds.items()},
        "instances_per_s": {n: round(len(files) / s, 1) for n, s in best.items()},
        "mb_per_s": {n: round(size / 1e6 / s, 1) for n, s in best.items()},
        "gateway_share_of_storescp": round(best["storescp"] / best["gateway"], 2),
        "pynetdicom_floor_share_of_storescp": round(best["storescp"] / best["pynetdicom_floor"], 2),
        "not_storing_share_of_storescp": round(best["storescp"] / best["gateway_not_storing"], 2),
        "woken_floor_share_of_storescp": round(
            best["storescp"] / best["pynetdicom_floor_woken"], 2
        ),
    }


@contextmanager
def link(mbit: int | None) -> Iterator[None]:
    """Loopback shaped to a link of ``mbit`` Mbit/s while in the block (tc's token bucket
    filter, its bucket one loopback packet: after a pause, no faster than the link), then
    as it was. Every process's loopback traffic goes through it: run nothing beside (a
    run killed with -9 leaves it: ``tc qdisc del dev lo root``)."""
    if mbit is None:
        yield
        return
    tc = shutil.which("tc")
    if tc is None or os.geteuid() != 0:
        raise SystemExit("--link-mbit shapes loopback with tc: it needs root and iproute2")
    shape = ["qdisc", "add", "dev", "lo", "root", "tbf", "rate", f"{mbit}mbit"]
    done = subprocess.run(
        [tc, *shape, "burst", "80kb", "latency", "20ms"], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"tc could not shape loopback: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run([tc, "qdisc", "del", "dev", "lo", "root"], check=False)


def one_per_association(workdir: Path, files: list[Path], repeats: int) -> dict[str, Any]:
    """Each file in an association of its own (a storescu each, one after the other), to
    the gateway and to storescp, alternately: the seconds an instance takes, the
    association's set-up and release included."""
    seconds: dict[str, list[float]] = {"gateway": [], "storescp": []}
    for attempt in range(repeats):
        for name in seconds:
            peer, port, called = receiver(name, workdir / f"single-{name}-{attempt}")
            began = time.perf_counter()
            for path in files:
                sent(storescu(port, [path], called=called))
            seconds[name].append((time.perf_counter() - began) / len(files))
            peer.stop()
    best = {name: statistics.median(values) for name, values in seconds.items()}
    return {
        "associations": len(files),
        "seconds_per_instance": {n: [round(s, 4) for s in v] for n, v in seconds.items()},
        "gateway_share_of_storescp": round(best["storescp"] / best["gateway"], 2),
    }


def floor_scp(port: int, woken: bool) -> None:
    """pynetdicom as the gateway sets it up, answering every C-STORE with success at once:
    what any SCP built on pynetdicom costs before it reads or stores anything; ``woken``:
    with the gateway's reactors (app/gateway/reactor.py) and its C-STORE responses
    (app/gateway/responses.py), its own floor."""
    if woken:
        reactor.install()
        responses.install()
    ae = AE(ae_title="FLOOR")
    ae.maximum_pdu_size = 0
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(str(context.abstract_syntax), TRANSFER_SYNTAXES)
    handlers = [(evt.EVT_C_STORE, lambda event: 0x0000)]
    ae.start_server(("127.0.0.1", port), block=True, evt_handlers=handlers)


def not_storing() -> None:
    """The gateway with every check of an instance but without writing it: what its
    durable storage (the fsyncs, renames and commit) costs, by difference."""
    from app.gateway.main import main
    from app.gateway.store import GatewayStore

    GatewayStore.add_instance = lambda self, series, sop, write: None  # type: ignore[method-assign]
    main([])


def stamp(line: str) -> float:
    """The time of a text log line: ``2026-12-03 10:09:10,268 INFO ...``."""
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def first(log: str, words: str) -> float:
    return next(stamp(line) for line in log.splitlines() if words in line)


def whole_path(
    workdir: Path,
    service_url: str,
    groups: dict[str, list[Path]],
    stable: float,
    results: str = "seg,sr",
) -> tuple[float, float, str]:
    """Every group sent at once (one storescu each, its key the calling AE); seconds from
    the last C-STORE to the last SEG at storescp, and the gateway's log."""
    pacs = Pacs(workdir / "pacs", free_port())
    pacs.start()
    port = free_port()
    node = gateway(
        workdir, service_url, port, stable_s=stable,
        UNET_DICOM_DESTINATIONS=f"PACS@127.0.0.1:{pacs.port}", UNET_DICOM_RESULTS=results,
    )  # fmt: skip
    node.start()
    try:
        wait_listening(port, node)
        senders = [storescu(port, files, calling=ae) for ae, files in groups.items()]
        for sender in senders:
            sent(sender)
        last_store = time.time()
        until(lambda: len(pacs.received()) >= len(groups), "every SEG at storescp", 1800)
        seconds = time.time() - last_store
        until(lambda: node.text().count("sent to") >= len(groups), "the gateway's log of it")
        return seconds, last_store, node.text()
    finally:
        node.stop()
        pacs.stop()


def run(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    # dcmtk leaves Nagle's algorithm on unless TCP_NODELAY is set: storescp then waits for a
    # delayed ACK (~40 ms) per instance on loopback. Both peers get its best here.
    os.environ["TCP_NODELAY"] = "1"
    files = ct_series(workdir / "ct", args.series, size=args.size)
    results: dict[str, Any] = {"model": str(args.model), "size": args.size}
    with link(args.link_mbit):
        results["receive"] = receive_rate(workdir, files, args.repeats)
    results["receive"]["link"] = f"{args.link_mbit} Mbit/s" if args.link_mbit else "loopback"
    if args.receive_only:
        return results
    results["one_per_association"] = one_per_association(workdir, files[:30], args.repeats)
    service = start_server(
        {"UNET_MODEL_PATH": str(args.model)}, workdir / "service.log", port=free_port()
    )
    try:
        for name, kinds in (("series", "seg,sr"), ("series_seg_only", "seg")):
            seconds, last_store, log = whole_path(
                workdir / name, service.url, {"MODALITY": files}, args.stable, kinds
            )
            stable, segmented, sent_at = (
                first(log, "is stable"), first(log, "segmented"), first(log, "sent to")
            )  # fmt: skip
            results[name] = {
                "slices": args.series,
                "results": kinds,
                "last_store_to_seg_s": round(seconds, 2),
                "stable_wait_s": round(stable - last_store, 2),
                "service_s": round(segmented - stable, 2),
                "sending_s": round(sent_at - segmented, 2),
                "stable_seconds_setting": args.stable,
            }
        groups = {
            f"CT{i}": ct_series(workdir / f"three-{i}", args.three, size=args.size)
            for i in (1, 2, 3)
        }
        seconds, _, _ = whole_path(workdir / "three", service.url, groups, args.stable)
        results["three_modalities"] = {
            "slices_each": args.three, "last_store_to_third_seg_s": round(seconds, 2)
        }  # fmt: skip
    finally:
        stop_server(service)
    return results


def mbit(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"a link's Mbit/s is a whole number over 0: {text!r}")
    return int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "model" / "unet.onnx")
    parser.add_argument("--size", type=int, default=512, help="CT slice side, px")
    parser.add_argument("--series", type=int, default=100, help="slices of the series")
    parser.add_argument("--three", type=int, default=30, help="slices of each of three series")
    parser.add_argument("--stable", type=float, default=2.0, help="UNET_DICOM_STABLE_SECONDS")
    parser.add_argument("--repeats", type=int, default=3, help="receive runs of each peer")
    parser.add_argument("--link-mbit", type=mbit, metavar="N", help="receive over loopback "
                        "shaped to an N Mbit/s link (root, tc)")  # fmt: skip
    parser.add_argument("--receive-only", action="store_true", help="only the receive rows")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--floor-scp", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--woken", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--not-storing", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.floor_scp:
        floor_scp(args.floor_scp, args.woken)
        return
    if args.not_storing:
        not_storing()
        return
    missing = [name for name, path in TOOLS.items() if path is None]
    if missing:
        raise SystemExit(f"needs {', '.join(missing)}: make system-deps")
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        results = run(Path(tmp), args)
    report(results, args.json)


if __name__ == "__main__":
    main()
