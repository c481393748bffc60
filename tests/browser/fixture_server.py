#!/usr/bin/env python3
"""Stand-in for tally's query API, for working on the dashboard and testing it.

Serves the dashboard's static files (index.html, app.js, style.css from
src/query/dashboard/) and plausible JSON for the read endpoints, built from
the wall clock so that it changes from one request to the next:

    GET /v1/stats
    GET /v1/{ads,campaigns,advertisers}/{id}/clicks?window=1m&from=MS&to=MS
    GET /v1/top?window=1m&k=10[&at=MS]
    GET /v1/late?from=MS&to=MS&limit=100

Modes:
    normal  a running system: clicks every minute, a viral ad, partial,
            final and restated rows, late and duplicate clicks.
    empty   a system that has committed nothing yet: null epoch and
            watermark, zero counters, empty rows.

With --upstream URL it serves the static files from disk and forwards every
other request to a running tally (e.g. http://127.0.0.1:18090), to try
edited assets on real data without rebuilding.

Usage:
    python3 tests/browser/fixture_server.py [--port 18091] [--mode normal|empty]
                                            [--upstream URL]

Standard library only. Listens on 127.0.0.1; stops on Ctrl-C or SIGTERM.
"""

import argparse
import hashlib
import json
import math
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

MINUTE = 60_000
WINDOWS = {"1m": MINUTE, "5m": 5 * MINUTE, "1h": 60 * MINUTE}
MAX_WINDOWS = 1440
ADS = ["ad-viral"] + [f"ad-{i:06d}" for i in range(100)]
CAMPAIGNS = 20
ADVERTISERS = 5
# Windows become final this long after they end (allowed lateness).
ALLOWED_LATENESS = 2 * MINUTE
# The watermark trails the wall clock by about this much.
WATERMARK_SLACK = 4_000
# Fixed start of the fake process, so counters grow from a plausible base.
STARTED_MS = int(time.time() * 1000) - 90 * MINUTE

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def unit(*parts):
    """A deterministic number in [0, 1) from the given parts."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def campaign_of(ad):
    if ad == "ad-viral":
        return "cmp-0000"
    return f"cmp-{int(ad[3:]) % CAMPAIGNS:04d}"


def advertiser_of(campaign):
    return f"adv-{int(campaign[4:]) % ADVERTISERS:03d}"


def now_ms():
    return int(time.time() * 1000)


def ad_clicks(ad, minute_start, now):
    """Clicks of one ad in the 1m window starting at minute_start, as seen at now."""
    if minute_start >= now:
        return 0
    if ad == "ad-viral":
        # Quiet, then a burst over the last 25 minutes that keeps growing.
        age = (now - minute_start) / MINUTE
        base = 40 if age > 25 else 40 + 2600 * math.exp(-age / 9)
    else:
        rank = int(ad[3:]) + 1
        base = 900 / rank ** 1.1
    wave = 1 + 0.25 * math.sin(minute_start / MINUTE / 7 + unit(ad) * 6.28)
    noise = 0.85 + 0.3 * unit(ad, minute_start)
    full = base * wave * noise
    # The open window fills up over its minute.
    done = min(1.0, (now - minute_start) / MINUTE)
    count = int(full * done)
    if count == 0 and unit(ad, minute_start, "z") < 0.5:
        return 0
    return count


def row_for(key_type, key, minute_start, now):
    if key_type == "ad":
        ads = [key] if key in ADS else []
    elif key_type == "campaign":
        ads = [a for a in ADS if campaign_of(a) == key]
    else:
        ads = [a for a in ADS if advertiser_of(campaign_of(a)) == key]
    clicks = sum(ad_clicks(a, minute_start, now) for a in ads)
    if clicks == 0:
        return None
    end = minute_start + MINUTE
    watermark = now - WATERMARK_SLACK
    version = 1
    if end + ALLOWED_LATENESS > watermark:
        status = "partial"
    elif unit(key, minute_start, "restated") < 0.12:
        status = "restated"
        version = 2 + int(unit(key, minute_start, "v") * 2)
        clicks += 1 + int(unit(key, minute_start, "late") * 6)
    else:
        status = "final"
    users = max(1, int(clicks * (0.78 + 0.12 * unit(key, minute_start, "u"))))
    return {
        "window_start": minute_start,
        "window_end": end,
        "clicks": clicks,
        "distinct_users": users,
        "status": status,
        "version": version,
    }


class Fixture:
    def __init__(self, mode):
        self.mode = mode

    def empty(self):
        return self.mode == "empty"

    def committed_epoch(self, now):
        return (now - WATERMARK_SLACK) // 1000 * 1000

    def stats(self):
        now = now_ms()
        if self.empty():
            return {
                "now_ms": now,
                "committed_epoch": None,
                "watermark": None,
                "watermark_lag_ms": None,
                "ingest": {"requests": 0, "accepted": 0, "rejected": 0, "written": 0},
                "job": {"on_time": 0, "duplicates": 0, "restating": 0, "held": 0},
            }
        elapsed = (now - STARTED_MS) / 1000
        # About 1,850 clicks/s with a slow swing, integrated so it only grows.
        accepted = int(1850 * elapsed + 300 * math.sin(elapsed / 40) * 40)
        lag = WATERMARK_SLACK + int(800 * unit(now // 2000))
        return {
            "now_ms": now,
            "committed_epoch": (now - 1500) // 1000 * 1000,
            "watermark": now - lag,
            "watermark_lag_ms": lag,
            "ingest": {
                "requests": accepted // 50,
                "accepted": accepted,
                "rejected": accepted // 4000,
                "written": accepted,
            },
            "job": {
                "on_time": int(accepted * 0.985),
                "duplicates": int(accepted * 0.011),
                "restating": int(accepted * 0.0031),
                "held": int(accepted * 0.0007),
            },
        }

    def head(self):
        now = now_ms()
        if self.empty():
            return now, None, None
        return now, self.committed_epoch(now), now - WATERMARK_SLACK

    def clicks(self, key_type, key, window, start, end):
        now, epoch, watermark = self.head()
        rows = []
        if not self.empty() and window == "1m":
            first = start // MINUTE * MINUTE
            for minute_start in range(first, end, MINUTE):
                if minute_start < start:
                    continue
                row = row_for(key_type, key, minute_start, now)
                if row is not None:
                    rows.append(row)
        return {
            "key_type": key_type,
            "key": key,
            "window": window,
            "from": start,
            "to": end,
            "committed_epoch": epoch,
            "watermark": watermark,
            "rows": rows,
        }

    def top(self, k, at):
        now, epoch, watermark = self.head()
        if self.empty():
            return {
                "window": "1m",
                "window_start": None,
                "window_end": None,
                "committed_epoch": None,
                "watermark": None,
                "total_clicks": 0,
                "ads": [],
                "campaigns": [],
            }
        start = (at if at is not None else now) // MINUTE * MINUTE
        ad_rows = []
        for ad in ADS:
            row = row_for("ad", ad, start, now)
            if row is not None:
                ad_rows.append(entry(ad, row))
        ad_rows.sort(key=lambda r: (-r["clicks"], r["key"]))
        total = sum(r["clicks"] for r in ad_rows)
        campaigns = []
        for c in range(CAMPAIGNS):
            key = f"cmp-{c:04d}"
            row = row_for("campaign", key, start, now)
            if row is not None:
                campaigns.append(entry(key, row))
        campaigns.sort(key=lambda r: (-r["clicks"], r["key"]))
        return {
            "window": "1m",
            "window_start": start,
            "window_end": start + MINUTE,
            "committed_epoch": epoch,
            "watermark": watermark,
            "total_clicks": total,
            "ads": ad_rows[:k],
            "campaigns": campaigns[:k],
        }

    def late(self, start, end, limit):
        if self.empty():
            return {"entries": [], "next": None}
        now = now_ms()
        entries = []
        first = max(start, now - 60 * MINUTE) // MINUTE * MINUTE
        for minute_start in range(first, min(end, now - 3 * MINUTE), MINUTE):
            for ad in ADS[:12]:
                if unit(ad, minute_start, "late-entry") < 0.05:
                    n = 1 + int(unit(ad, minute_start, "n") * 4)
                    batch = minute_start + 3 * MINUTE + int(unit(ad, minute_start, "b") * 50) * 1000
                    held = unit(ad, minute_start, "held") < 0.2
                    ids = [fake_uuid(ad, minute_start, i) for i in range(n)]
                    campaign = campaign_of(ad)
                    # The ledger keeps each late click under every key type.
                    for key_type, key in (("ad", ad), ("campaign", campaign), ("advertiser", advertiser_of(campaign))):
                        entries.append({
                            "key_type": key_type,
                            "key": key,
                            "window_start": minute_start,
                            "batch": batch,
                            "held": held,
                            "request_ids": ids,
                        })
        # Cut as tally cuts at `limit` entries: `next` is the last one's
        # cursor (window start, key type, batch, request id, key in hex).
        following = None
        if len(entries) > limit:
            entries = entries[:limit]
            last = entries[-1]
            code = ("ad", "campaign", "advertiser").index(last["key_type"])
            request_id = last["request_ids"][-1].replace("-", "")
            following = f'{last["window_start"]}-{code}-{last["batch"]}-{request_id}-{last["key"].encode().hex()}'
        return {"entries": entries, "next": following}


def entry(key, row):
    return {
        "key": key,
        "clicks": row["clicks"],
        "distinct_users": row["distinct_users"],
        "status": row["status"],
        "version": row["version"],
    }


def fake_uuid(*parts):
    h = hashlib.md5("|".join(map(str, parts)).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


class BadRequest(Exception):
    def __init__(self, field, reason):
        super().__init__(reason)
        self.field = field
        self.reason = reason


def int_param(query, name, required=True):
    values = query.get(name)
    if not values:
        if required:
            raise BadRequest(name, "missing")
        return None
    try:
        value = int(values[0])
    except ValueError:
        raise BadRequest(name, f"not an integer: {values[0]!r}")
    if value < 0:
        raise BadRequest(name, "must be >= 0")
    return value


def window_param(query):
    window = (query.get("window") or ["1m"])[0]
    if window not in WINDOWS:
        raise BadRequest("window", f"unknown window {window!r}: one of 1m, 5m, 1h")
    return window


def make_handler(fixture, static_dir, upstream):
    class Handler(BaseHTTPRequestHandler):
        server_version = "tally-fixture"

        def log_message(self, fmt, *args):
            if os.environ.get("FIXTURE_LOG"):
                sys.stderr.write("fixture: " + fmt % args + "\n")

        def send_json(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            try:
                self.route(url.path, query)
            except BadRequest as err:
                self.send_json(400, {"field": err.field, "reason": err.reason})

        def route(self, path, query):
            if path in STATIC:
                name, content_type = STATIC[path]
                with open(os.path.join(static_dir, name), "rb") as f:
                    data = f.read()
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-cache")
                self.end_headers()
                self.wfile.write(data)
                return
            if upstream:
                self.forward()
                return
            if path == "/v1/stats":
                self.send_json(200, fixture.stats())
                return
            if path == "/v1/top":
                window = window_param(query)
                if window != "1m":
                    raise BadRequest("window", "top is kept for 1m windows only")
                k = int_param(query, "k", required=False) or 10
                self.send_json(200, fixture.top(min(k, 100), int_param(query, "at", required=False)))
                return
            if path == "/v1/late":
                start = int_param(query, "from")
                end = int_param(query, "to")
                limit = min(int_param(query, "limit", required=False) or 100, 1000)
                self.send_json(200, fixture.late(start, end, limit))
                return
            parts = path.split("/")
            kinds = {"ads": "ad", "campaigns": "campaign", "advertisers": "advertiser"}
            if len(parts) == 5 and parts[1] == "v1" and parts[2] in kinds and parts[4] == "clicks":
                key = unquote(parts[3])
                window = window_param(query)
                start = int_param(query, "from")
                end = int_param(query, "to")
                if end <= start:
                    raise BadRequest("to", "must be greater than from")
                if (end - start) // WINDOWS[window] > MAX_WINDOWS:
                    raise BadRequest("to", f"at most {MAX_WINDOWS} windows per request")
                self.send_json(200, fixture.clicks(kinds[parts[2]], key, window, start, end))
                return
            self.send_json(404, {"field": "path", "reason": f"no route for {path}"})

        def forward(self):
            try:
                with urllib.request.urlopen(upstream + self.path, timeout=10) as res:
                    status, content_type, data = res.status, res.headers.get("Content-Type"), res.read()
            except urllib.error.HTTPError as err:
                status, content_type, data = err.code, err.headers.get("Content-Type"), err.read()
            except OSError as err:
                self.send_json(502, {"field": "upstream", "reason": str(err)})
                return
            self.send_response(status)
            self.send_header("Content-Type", content_type or "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_static = os.path.normpath(os.path.join(here, "..", "..", "src", "query", "dashboard"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=18091)
    parser.add_argument("--mode", choices=["normal", "empty"], default="normal")
    parser.add_argument("--static-dir", default=default_static)
    parser.add_argument("--upstream", help="forward API requests to this tally, e.g. http://127.0.0.1:18090")
    args = parser.parse_args()
    upstream = args.upstream.rstrip("/") if args.upstream else None

    handler = make_handler(Fixture(args.mode), args.static_dir, upstream)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    what = f"static files + {upstream}" if upstream else f"{args.mode} mode"
    print(f"fixture: serving {what} on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
