"""The batch peers of `tally run FILE`: DuckDB and chDB (ClickHouse in
process) computing tally's table from the same NDJSON clicks and catalog
CSV, reading included, with 2 threads; and the check that their clicks
equal tally's.

    peers.py duckdb CLICKS CATALOG OUT.csv [THREADS]
    peers.py chdb   CLICKS CATALOG OUT.csv [THREADS]
    peers.py check  TALLY_ROWS.ndjson PEER.csv...

Each query is written as an analyst fluent in that engine would write it:
typed reads of the files (no schema inference), duplicates dropped by one
aggregation on the request id (retries carry the same click), the catalog
joined once per click (a hash join on the small side), and the nine
(key, window) counts in one pass over the clicks with GROUPING SETS, each
set a count and the engine's own approximate distinct count (DuckDB's
HyperLogLog `approx_count_distinct`, ClickHouse's `uniq`). The result is
written to a CSV file, as tally writes its rows.

What an expert might still change: ClickHouse could read the NDJSON with
`input_format_parallel_parsing` tuned or from a pre-converted Native or
Parquet file (not the same work: tally reads the NDJSON); DuckDB could
keep the deduplicated clicks in a temporary table when several queries
need them (one query here). Distinct users are approximate in all three
engines and are not compared; clicks are, exactly.
"""

import csv
import json
import sys
import time

GRANULARITIES = (("1m", 60_000), ("5m", 300_000), ("1h", 3_600_000))
KEY_TYPES = ("ad", "campaign", "advertiser")


def duckdb_rows(clicks, catalog, out, threads):
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    con.execute("SET preserve_insertion_order = false")
    sets = ", ".join(f"({key}, {g})" for key in ("ad", "campaign", "advertiser") for g in ("m1", "m5", "h1"))
    query = f"""
    COPY (
      WITH clicks AS (
        SELECT any_value(ad_id) AS ad, min("timestamp") AS ts, any_value(user_id) AS user_id
        FROM read_json('{clicks}', format = 'newline_delimited',
             columns = {{ad_id: 'VARCHAR', "timestamp": 'BIGINT', user_id: 'VARCHAR', request_id: 'UUID'}})
        GROUP BY request_id
      ),
      catalog AS (
        SELECT * FROM read_csv('{catalog}', header = true,
             columns = {{ad_id: 'VARCHAR', campaign_id: 'VARCHAR', advertiser_id: 'VARCHAR'}})
      ),
      joined AS (
        SELECT c.ad, coalesce(a.campaign_id, 'unknown') AS campaign, coalesce(a.advertiser_id, 'unknown') AS advertiser,
               c.user_id, c.ts // 60000 * 60000 AS m1, c.ts // 300000 * 300000 AS m5, c.ts // 3600000 * 3600000 AS h1
        FROM clicks c LEFT JOIN catalog a ON c.ad = a.ad_id
      )
      SELECT CASE WHEN ad IS NOT NULL THEN 'ad' WHEN campaign IS NOT NULL THEN 'campaign' ELSE 'advertiser' END AS key_type,
             coalesce(ad, campaign, advertiser) AS key,
             CASE WHEN m1 IS NOT NULL THEN '1m' WHEN m5 IS NOT NULL THEN '5m' ELSE '1h' END AS granularity,
             coalesce(m1, m5, h1) AS window_start,
             count(*) AS clicks, approx_count_distinct(user_id) AS distinct_users
      FROM joined
      GROUP BY GROUPING SETS ({sets})
    ) TO '{out}' (HEADER, DELIMITER ',')
    """
    con.execute(query)


def chdb_rows(clicks, catalog, out, threads):
    import chdb

    sets = ", ".join(f"({key}, {g})" for key in ("ad", "campaign", "advertiser") for g in ("m1", "m5", "h1"))
    query = f"""
    INSERT INTO FUNCTION file('{out}', 'CSVWithNames', 'key_type String, key String, granularity String, window_start Int64, clicks UInt64, distinct_users UInt64')
    WITH clicks AS (
      SELECT any(ad_id) AS ad, min(timestamp) AS ts, any(user_id) AS user_id
      FROM file('{clicks}', 'JSONEachRow', 'ad_id String, timestamp Int64, user_id String, request_id UUID')
      GROUP BY request_id
    ),
    joined AS (
      SELECT c.ad AS ad,
             if(empty(a.campaign_id), 'unknown', a.campaign_id) AS campaign,
             if(empty(a.advertiser_id), 'unknown', a.advertiser_id) AS advertiser,
             c.user_id AS user_id,
             intDiv(c.ts, 60000) * 60000 AS m1, intDiv(c.ts, 300000) * 300000 AS m5, intDiv(c.ts, 3600000) * 3600000 AS h1
      FROM clicks AS c
      LEFT JOIN file('{catalog}', 'CSVWithNames', 'ad_id String, campaign_id String, advertiser_id String') AS a ON c.ad = a.ad_id
    )
    SELECT multiIf(grouping(ad) = 0, 'ad', grouping(campaign) = 0, 'campaign', 'advertiser') AS key_type,
           multiIf(grouping(ad) = 0, ad, grouping(campaign) = 0, campaign, advertiser) AS key,
           multiIf(grouping(m1) = 0, '1m', grouping(m5) = 0, '5m', '1h') AS granularity,
           multiIf(grouping(m1) = 0, m1, grouping(m5) = 0, m5, h1) AS window_start,
           count() AS clicks, uniq(user_id) AS distinct_users
    FROM joined
    GROUP BY GROUPING SETS ({sets})
    SETTINGS max_threads = {int(threads)}, join_use_nulls = 0, engine_file_truncate_on_insert = 1
    """
    chdb.query(query)


def tally_clicks(path):
    """The latest row of every window of tally's rows file: its clicks."""
    latest = {}
    with open(path) as rows:
        for line in rows:
            row = json.loads(line)
            window = (row["key_type"], row["key"], row["granularity"], int(row["window_start"]))
            if window not in latest or row["version"] >= latest[window][0]:
                latest[window] = (row["version"], int(row["clicks"]))
    return {window: clicks for window, (_, clicks) in latest.items()}


def peer_clicks(path):
    with open(path, newline="") as rows:
        return {
            (r["key_type"], r["key"], r["granularity"], int(r["window_start"])): int(r["clicks"])
            for r in csv.DictReader(rows)
        }


def check(tally_rows, peers):
    expected = tally_clicks(tally_rows)
    ok = True
    for path in peers:
        found = peer_clicks(path)
        differ = sorted(w for w in expected.keys() | found.keys() if expected.get(w) != found.get(w))
        if differ:
            ok = False
            shown = ", ".join(f"{w}: tally {expected.get(w)}, peer {found.get(w)}" for w in differ[:5])
            print(f"check: {path}: {len(differ)} of {len(expected)} windows differ from tally's clicks, e.g. {shown}")
        else:
            print(f"check: {path}: the clicks of all {len(expected)} windows equal tally's")
    return ok


def main(argv):
    if len(argv) >= 4 and argv[0] in ("duckdb", "chdb"):
        threads = int(argv[4]) if len(argv) > 4 else 2
        started = time.monotonic()
        (duckdb_rows if argv[0] == "duckdb" else chdb_rows)(argv[1], argv[2], argv[3], threads)
        print(f"{argv[0]}: {time.monotonic() - started:.3f} s", file=sys.stderr)
        return 0
    if len(argv) >= 3 and argv[0] == "check":
        return 0 if check(argv[1], argv[2:]) else 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
