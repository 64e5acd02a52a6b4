#!/usr/bin/env python3
"""Runs every migration statement and every dashboard query of schemas/sql/ on a modern
ClickHouse (chdb-core: ClickHouse 26.x in-process), the engine users run, as the tests do
on Debian's 18.16. Inserts a few rows first so that each query has data to read, and
checks the answers. Exits non-zero naming the statement that fails.

    python3 deploy/local/check_sql_modern.py
"""
import re
import sys
import tempfile
from pathlib import Path

from chdb import session

REPO = Path(__file__).resolve().parents[2]
SQL = REPO / "schemas" / "sql"


def statements(text):
    """The same splitting rule as schemas/src/sql.rs: a statement ends with a line ending in ';'."""
    out, cur = [], []
    for line in text.splitlines():
        if line.lstrip().startswith("--"):
            continue
        cur.append(line)
        if line.rstrip().endswith(";"):
            stmt = "\n".join(cur).strip().rstrip(";").strip()
            if stmt:
                out.append(stmt)
            cur = []
    rest = "\n".join(cur).strip()
    if rest:
        out.append(rest)
    return out


def dashboard_queries(text):
    for block in text.split("-- name: ")[1:]:
        name, rest = block.split("\n", 1)
        yield name.strip(), statements(rest)[0]


def render(sql, params):
    """Same rendering as cdrflow's for 18.16; a modern server could also take them as query parameters."""
    def sub(m):
        name, ty = m.group(1), m.group(2)
        v = params[name]
        if ty == "DateTime":
            return f"toDateTime('{v}', 'UTC')"
        if ty == "String":
            assert re.fullmatch(r"[A-Za-z0-9_.-]{0,64}", v), v
            return f"'{v}'"
        return str(int(v))
    return re.sub(r"\{(\w+):(\w+)\}", sub, sql)


def main():
    failures = 0
    with tempfile.TemporaryDirectory() as d:
        s = session.Session(d)
        version = s.query("SELECT version()", "CSV").bytes().decode().strip()
        print(f"modern engine: ClickHouse {version} (chdb)")
        files = [SQL / "bootstrap.sql"] + sorted((SQL / "migrations").glob("*.sql"))
        for f in files:
            for stmt in statements(f.read_text()):
                try:
                    s.query(stmt)
                    print(f"ok   {f.name}: {stmt.splitlines()[0][:70]}")
                except Exception as e:  # noqa: BLE001 - report and go on
                    failures += 1
                    print(f"FAIL {f.name}: {stmt.splitlines()[0][:70]}\n     {e}")
        # Idempotent: every CREATE runs a second time without error (ALTERs run once:
        # schema_migrations versions them, and 18.16 has no ADD COLUMN IF NOT EXISTS).
        for f in files:
            for stmt in statements(f.read_text()):
                if not stmt.startswith("ALTER") and not stmt.startswith("DROP"):
                    s.query(stmt)
        s.query("INSERT INTO cdrflow.regions VALUES (38, 'Иркутская область', 'Irkutsk Oblast', 'Asia/Irkutsk'), (77, 'Москва', 'Moscow', 'Europe/Moscow')")
        s.query("""INSERT INTO cdrflow.counters_log VALUES
            ('g','cdrs',0,0,9,now(),38,'122','2022-02-01 09:00:00','2022-02-01 17:00:00',10,8,1,1,0,7,1,80000,30000,900000,1,0,['covid','housing'],[6,4],['30_40','unknown'],[5,5],['voice'],[10],[1,2,3,4,5,6,7,8,9,10]),
            ('g','cdrs',1,0,3,now(),77,'112','2022-02-01 09:00:00','2022-02-01 12:00:00',4,4,0,0,0,4,0,8000,3000,100000,0,0,['police'],[4],['40_60'],[4],['voice'],[4],[11,12,13,14]),
            ('g','cdrs',1,4,4,now(),0,'','1970-01-01 00:00:00','1970-01-01 00:00:00',0,0,0,0,0,0,0,0,0,0,0,0,[],[],[],[],[],[],[])""")
        # A rebuild of Moscow's hour replaces its streaming row (4 → 5 offered).
        s.query("""INSERT INTO cdrflow.counters_rebuilt VALUES
            ('backfill','',0,0,0,now(),77,'112','2022-02-01 09:00:00','2022-02-01 12:00:00',5,5,0,0,0,5,0,9000,3000,120000,0,0,['police'],[5],['40_60'],[5],['voice'],[5],[])""")
        params = {"from": "2022-01-01 00:00:00", "to": "2023-01-01 00:00:00", "limit": 5, "region": 38, "line": ""}
        expect = {
            "national_calls_per_hour": "2022-02-01 09:00:00,15,13,1",
            "region_local_day": "38,Irkutsk Oblast,2022-02-01,10,8,1",
            "line_region_quality": "112,77,5,5,0,0,1,1.8",
            "top_regions": "38,Irkutsk Oblast,10",
            "topic_shares": "covid,6,0.4",
            "age_band_shares": "30_40,5,0.3333333333333333",
            "region_quality": "38,Irkutsk Oblast,10,8,0.1,0.7777777777777778,10",
            "regions": "38,Irkutsk Oblast,Иркутская область,Asia/Irkutsk",
            "lines": "112,5",
            "line_hourly": "2022-02-01 09:00:00,122,10,8,0.7777777777777778",
            "region_line_quality": "122,10,8,0.1,0.7777777777777778,10",
            "region_local_hour_profile": "17,10,8,1",
            "region_topics": "covid,6",
        }
        for name, sql in dashboard_queries((SQL / "dashboards.sql").read_text()):
            try:
                out = s.query(render(sql, params), "CSV").bytes().decode().replace('"', "")
                first = out.splitlines()[0] if out else ""
                ok = first == expect[name]
                failures += not ok
                print(f"{'ok  ' if ok else 'FAIL'} dashboard {name}: {first}" + ("" if ok else f" (want {expect[name]})"))
            except Exception as e:  # noqa: BLE001
                failures += 1
                print(f"FAIL dashboard {name}: {e}")
        # The cluster layout (deploy/clickhouse-cluster/cluster.sql, made from the same files by
        # `cdrflow migrate --cluster hotlines --print`): parsed by the modern engine's own parser
        # (it needs a cluster and Keeper to run).
        cluster = [x.strip() for x in (REPO / "deploy/clickhouse-cluster/cluster.sql").read_text().split(";\n") if x.strip()]
        for stmt in cluster:
            quoted = "'" + stmt.replace("\\", "\\\\").replace("'", "\\'") + "'"
            try:
                s.query(f"SELECT formatQuery({quoted})", "CSV")
            except Exception as e:  # noqa: BLE001
                failures += 1
                print(f"FAIL cluster.sql: {stmt.splitlines()[0][:70]}\n     {e}")
        print(f"ok   cluster.sql: {len(cluster)} statements parse")
    print(f"{'all statements pass' if failures == 0 else f'{failures} failures'} on the modern engine")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
