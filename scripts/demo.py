#!/usr/bin/env python3
"""The end-to-end demo: central list building, a broker, the roadside daemon and a hits consumer.

1. starts a local Mosquitto broker on a free loopback port;
2. plays the central side: creates signing keys, registers the unit's device key, builds a
   signed, encrypted reference-list package from demo/demo_list.csv and publishes it (retained);
3. starts `anpr-edge hits`, the central consumer, which prints every hit it receives;
4. runs the daemon (`anpr-edge run`) on the bundled demo video until it ends and its outbox drained;
5. prints what arrived. Only the listed plates arrive; every other car is forgotten by the unit.

Everything lives in a temporary folder (or --workdir) and is removed afterwards unless --keep.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo"
BIN = [sys.executable, "-m", "edge.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(exe).exists():
        sys.exit("mosquitto is not installed: run scripts/setup.sh first")
    return exe


def start_broker(work: Path, port: int) -> subprocess.Popen:
    conf = work / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=open(work / "mosquitto.log", "wb"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("mosquitto did not start; see " + str(work / "mosquitto.log"))


def cli(*args: str, quiet: bool = True) -> str:
    res = subprocess.run([*BIN, *args], capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"anpr-edge {' '.join(args[:2])} failed:\n{res.stderr}")
    return res.stdout


def unit_config(work: Path, port: int, video: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "config" / "edge.example.yaml").read_text())
    cfg["device"] = {"id": "demo-unit", "state_dir": str(work / "unit" / "state")}
    cfg["site"] = {"lat": 52.0907, "lon": 5.1214, "road": "demo road", "direction": "north"}
    cfg["camera"].update(source=f"file:{video}", width=None, height=None, fps=0, loop=False, queue_size=256)
    cfg["models"]["dir"] = str(ROOT / "models")
    cfg["lists"].update(enabled=["*"], device_id="demo-unit", device_key=str(work / "unit" / "device.key"),
                        signing_public_key=str(work / "central" / "trusted.pub"),
                        store_dir=str(work / "unit" / "state" / "lists"))
    cfg["mqtt"] = {"host": "127.0.0.1", "port": port, "protocol": "auto", "hit_topic": "anpr/{agency}/{device}/hits",
                   "heartbeat_s": 5}
    cfg["evidence"]["mode"] = "crop"
    cfg["logging"]["level"] = "INFO"
    path = work / "unit" / "edge.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=DEMO / "demo.mp4", help="video to replay (default: the demo)")
    ap.add_argument("--workdir", type=Path, help="keep keys, config, state and logs here")
    ap.add_argument("--keep", action="store_true", help="do not delete the temporary folder")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="anpr-edge-demo-"))
    (work / "unit").mkdir(parents=True, exist_ok=True)
    port = free_port()
    broker = start_broker(work, port)
    consumer = None
    try:
        print(f"[demo] broker on 127.0.0.1:{port}; work folder {work}")
        central = work / "central"
        cli("lists", "init", "--state", str(central))
        cli("lists", "keygen-device", "--key", str(work / "unit" / "device.key"), "--pub", str(work / "unit" / "device.pub"))
        cli("lists", "device-add", "--state", str(central), "--id", "demo-unit", "--pub", str(work / "unit" / "device.pub"))
        built = json.loads(cli("lists", "build", "--state", str(central), "--lists", str(DEMO / "lists.yaml"),
                               "--csv", str(DEMO / "demo_list.csv"), "--publish", "--host", "127.0.0.1",
                               "--port", str(port)))
        print(f"[demo] central: list package v{built['version']} with {built['entries']} hashed plates on lists "
              f"{', '.join(built['lists'])}, signed, encrypted for demo-unit, published")

        ready = work / "consumer.ready"
        consumer = subprocess.Popen([*BIN, "hits", "--host", "127.0.0.1", "--port", str(port), "--topic", "anpr/+/+/hits",
                                     "--ready-file", str(ready)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        hits: list[dict] = []

        def collect() -> None:
            for line in consumer.stdout:
                hit = json.loads(line)
                hits.append(hit)
                m = hit["matches"][0]
                print(f"[central] HIT {hit['plate_formatted']:>10} ({hit['country']}) conf {hit['confidence']:.2f} "
                      f"list {m['list_id']} [{m['category']}, {m['action']}, priority {m['priority']}] "
                      f"{hit['match_type']} match, {hit['passage']['frames']} frames, id {hit['hit_id']}", flush=True)

        reader = threading.Thread(target=collect, daemon=True)
        reader.start()
        deadline = time.monotonic() + 15
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

        config = unit_config(work, port, args.video.resolve())
        print(f"[demo] unit: anpr-edge run --config {config}")
        t0 = time.monotonic()
        with open(work / "unit" / "daemon.log", "w") as log:
            rc = subprocess.run([*BIN, "run", "--config", str(config), "--exit-at-end"], stderr=log, cwd=ROOT).returncode
        if rc != 0:
            print((work / "unit" / "daemon.log").read_text(), file=sys.stderr)
            sys.exit(f"[demo] the daemon exited with {rc}")
        time.sleep(1.5)
        status = json.loads((work / "unit" / "state" / "status.json").read_text())
        print(f"[demo] unit processed {status.get('frames')} frames, {status.get('passages')} vehicle passages "
              f"in {time.monotonic() - t0:.1f} s; {status.get('hits')} hit(s) sent, outbox now {status.get('outbox_depth')}")
        print(f"[demo] central received {len(hits)} hit(s); every other passage was forgotten on the unit")
        return 0 if hits else 1
    finally:
        if consumer is not None:
            consumer.terminate()
            consumer.wait(5)
        broker.terminate()
        broker.wait(5)
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
