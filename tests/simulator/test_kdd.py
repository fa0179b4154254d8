"""The KDD Cup 2012 importer: the real click log as the simulator's event logs, and its named errors."""

from __future__ import annotations

import gzip
import itertools
import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from loopml.demo import labels_within_window
from loopml.errors import DataError
from loopml.simulator import CLICK_SCHEMA, IMPRESSION_SCHEMA, event_days, import_kdd, read_kdd_log
from loopml.simulator.kdd import IMPORTED_SCHEMA, MANIFEST, UNKNOWN

KDD_FILE = "kdd2012_click_small/Click_prediction_small.csv"
ROWS, CLICKS = 39_948, 6_728  # SOURCE.md: 39,948 rows, click = 1 on 6,728 (16.8%)


@pytest.fixture(scope="module")
def kdd_csv(datasets):
    return datasets / KDD_FILE


@pytest.fixture(scope="module")
def log(kdd_csv):
    return read_kdd_log(kdd_csv)


@pytest.fixture(scope="module")
def days(log):
    return event_days(log, 8)


@pytest.fixture(scope="module")
def raw(kdd_csv):
    """The file as DuckDB reads it, independently of the importer."""
    return duckdb.sql(f"SELECT * FROM read_csv_auto('{kdd_csv}')").to_arrow_table()


def test_every_row_and_the_label_rate_survive_the_natural_label_rule(log, days, raw):
    assert log.rows == ROWS and not log.capped
    assert sum(d.impressions.num_rows for d in days) == ROWS
    assert sum(d.clicks.num_rows for d in days) == CLICKS
    # the spec's rule (a click within 600 s of the impression) gives back the file's label, row for row
    labels = np.concatenate([labels_within_window(d, 600) for d in days])
    assert labels.sum() == CLICKS and round(labels.mean(), 3) == 0.168
    np.testing.assert_array_equal(labels, raw.column("click").to_numpy())


def test_event_logs_have_the_simulators_columns_and_the_files_values(days, raw):
    imp = pa.concat_tables([d.impressions for d in days])
    clicks = pa.concat_tables([d.clicks for d in days])
    assert imp.schema == IMPORTED_SCHEMA and clicks.schema == CLICK_SCHEMA
    assert imp.schema.names[: len(IMPRESSION_SCHEMA)] == IMPRESSION_SCHEMA.names  # the simulator's, then `impression`
    for col in ("ad_id", "advertiser_id", "query_id", "keyword_id", "user_id", "depth", "position", "impression"):
        np.testing.assert_array_equal(imp.column(col).to_numpy(), raw.column(col).to_numpy(), err_msg=col)
    np.testing.assert_array_equal(imp.column("impression_id").to_numpy(), np.arange(1, ROWS + 1))
    assert set(imp.column("device").to_pylist()) == {UNKNOWN} == set(imp.column("match_type").to_pylist())


def test_rows_spread_over_consecutive_days_in_file_order_with_clicks_inside_the_window(days):
    ts = np.concatenate([pc.cast(d.impressions.column("ts"), pa.int64()).to_numpy() for d in days])
    assert np.all(np.diff(ts) > 0)  # file order is time order
    dates = [d.date for d in days]
    assert [(b - a).days for a, b in itertools.pairwise(dates)] == [1] * 7
    for d in days:
        day_ts = pc.cast(d.impressions.column("ts"), pa.int64()).to_numpy()
        assert {t.date() for t in d.impressions.column("ts").to_pylist()[:: max(1, d.impressions.num_rows // 50)]} == {d.date}
        ids = d.impressions.column("impression_id").to_numpy()
        pos = np.searchsorted(ids, d.clicks.column("impression_id").to_numpy())
        delay_s = (pc.cast(d.clicks.column("click_ts"), pa.int64()).to_numpy() - day_ts[pos]) / 1e6
        assert delay_s.min() >= 1.0 and delay_s.max() <= 540.0
        assert abs(d.impressions.num_rows - ROWS / 8) <= 1


def test_file_order_carries_no_time_so_every_day_looks_alike(days):
    """What the docs claim: the imported "days" are slices of a stationary file (a time split is a random split)."""
    ctr = [d.stats["ctr"] for d in days]
    anon = [d.stats["anonymous_share"] for d in days]
    assert max(abs(c - CLICKS / ROWS) for c in ctr) < 0.02
    assert max(anon) - min(anon) < 0.03


def test_import_is_deterministic_for_a_seed(log):
    a, b, c = (event_days(log, 4, seed=s)[1] for s in (0, 0, 1))
    assert a.impressions.equals(b.impressions) and a.clicks.equals(b.clicks)
    assert not a.impressions.column("ts").equals(c.impressions.column("ts"))


def test_tsv_parquet_and_gzip_of_the_same_columns_read_alike(kdd_csv, tmp_path):
    head = pacsv.read_csv(kdd_csv).slice(0, 3000)
    tsv = tmp_path / "log.tsv"
    pacsv.write_csv(head, tsv, pacsv.WriteOptions(delimiter="\t"))
    pq.write_table(head, tmp_path / "log.parquet")
    gz = tmp_path / "log.csv.gz"
    with gzip.open(gz, "wb") as f:
        pacsv.write_csv(head, f)
    want = read_kdd_log(kdd_csv, rows=3000)
    assert want.capped and want.rows == 3000
    for path in (tsv, tmp_path / "log.parquet", gz):
        got = read_kdd_log(path)
        assert got.table.equals(want.table), path.name
        assert not got.capped and got.sha256 and len(got.sha256) == 64
    assert read_kdd_log(tmp_path / "log.parquet", rows=1000).rows == 1000


def test_a_log_without_the_impression_count_gets_one_session_per_row(kdd_csv):
    t = pacsv.read_csv(kdd_csv).slice(0, 100).drop_columns(["impression", "url_hash", "title_id"])
    log = read_kdd_log(t)
    assert log.rows == 100 and set(log.table.column("impression").to_pylist()) == {1}


def _csv(tmp_path, kdd_csv, edit=None, drop=None, name="bad.csv"):
    """The real file's header and first 50 data rows, with one cell edited or one column dropped."""
    lines = [ln for ln in kdd_csv.read_text().splitlines() if ln.strip()][:51]
    header = [h.strip('"') for h in lines[0].split(",")]
    rows = [ln.split(",") for ln in lines[1:]]
    if edit is not None:
        row, col, value = edit
        rows[row][header.index(col)] = value
    if drop is not None:
        k = header.index(drop)
        header.pop(k)
        for r in rows:
            r.pop(k)
    path = tmp_path / name
    # keep the shipped layout: quoted header, then a blank line
    path.write_text(",".join(f'"{h}"' for h in header) + "\n\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ((6, "ad_id", "ad-42"), ["column `ad_id`", "row 7 (line 9)", "'ad-42'", "non-negative integer"]),
        ((0, "user_id", ""), ["column `user_id`", "row 1 (line 3)", "''", "non-negative integer"]),
        ((3, "click", "yes"), ["column `click`", "row 4 (line 6)", "'yes'"]),
        ((3, "click", "0.5"), ["column `click`", "row 4", "'0.5'"]),
        ((3, "click", "-1"), ["column `click`", "row 4", "'-1'"]),
        ((9, "click", "3"), ["column `click`", "row 10 (line 12)", "3 clicks", "`impression` count 1"]),
        ((2, "position", "3"), ["column `position`", "row 3 (line 5)", "expected 1..", "1 row(s) like it"]),
        ((5, "impression", "0"), ["column `impression`", "row 6 (line 8): 0 is not", "at least 1"]),
    ],
)
def test_a_bad_value_names_the_file_column_row_line_and_value(tmp_path, kdd_csv, edit, expected):
    if edit[1] == "position":  # make the edit land on a page with fewer slots than 3
        lines = [ln for ln in kdd_csv.read_text().splitlines() if ln.strip()][1:51]
        edit = (next(i for i, ln in enumerate(lines) if ln.split(",")[5] in ("1", "2")), "position", "3")
        expected = [e.replace("row 3 (line 5)", f"row {edit[0] + 1} (line {edit[0] + 3})") for e in expected]
    path = _csv(tmp_path, kdd_csv, edit=edit)
    with pytest.raises(DataError) as err:
        read_kdd_log(path)
    msg = str(err.value)
    assert str(path) in msg
    for part in expected:
        assert part in msg, (part, msg)


def test_a_missing_column_is_named_with_the_columns_found(tmp_path, kdd_csv):
    path = _csv(tmp_path, kdd_csv, drop="advertiser_id")
    with pytest.raises(DataError, match=r"lacks the column\(s\) `advertiser_id`; found `click`, `impression`"):
        read_kdd_log(path)


def test_a_missing_or_empty_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere\.csv: click log not found"):
        read_kdd_log(tmp_path / "nowhere.csv")
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(DataError, match=r"empty\.csv: the click log is empty"):
        read_kdd_log(tmp_path / "empty.csv")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable Parquet file"):
        read_kdd_log(tmp_path / "broken.parquet")
    with pytest.raises(DataError, match="row cap must be at least 1"):
        read_kdd_log(tmp_path / "nowhere.csv", rows=0)


def test_import_writes_days_and_a_manifest_and_holds_out_the_last(kdd_csv, tmp_path):
    out = tmp_path / "data"
    res = import_kdd(kdd_csv, out, days=4, rows=4000, hold_out=1)
    assert [p.name for p in sorted((out / "impressions").iterdir())] == ["2026-11-02.parquet", "2026-11-03.parquet",
                                                                          "2026-11-04.parquet"]
    assert not (out / "truth").exists() and not (out / "simulation.json").exists()  # not simulated
    written = pq.read_table(out / "impressions").num_rows
    assert written == 3000 and res.days[3].impressions.num_rows == 1000
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["source"]["rows_read"] == 4000 and manifest["source"]["capped"] is True
    assert manifest["source"]["sha256"] == "2d95fded9f897852b9532c854091e58d9136b7679404292feb341432291343bd"
    assert [d["held_out"] for d in manifest["days"]] == [False, False, False, True]
    assert any("in effect a random split" in d for d in manifest["decisions"])
    with pytest.raises(DataError, match="hold_out must be between 0 and days - 1"):
        import_kdd(kdd_csv, out, days=2, hold_out=2)


def test_cli_import_kdd_then_the_files_the_template_reads(cli, kdd_csv, tmp_path):
    out = tmp_path / "proj" / "data"
    proc = cli("import-kdd", str(kdd_csv), "--out", str(out), "--days", "3", "--rows", "3000")
    assert proc.returncode == 0, proc.stderr
    assert "3,000 rows of Click_prediction_small.csv (capped) imported" in proc.stdout
    assert "2026-11-04" in proc.stdout and "2,001-3,000" in proc.stdout
    clicks = pq.read_table(out / "clicks")
    assert clicks.schema == CLICK_SCHEMA and 0.1 < clicks.num_rows / 3000 < 0.25
    bad = cli("import-kdd", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x"))
    assert bad.returncode != 0 and "missing.csv: click log not found" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_the_original_headerless_training_txt_layout_is_read(kdd_csv, tmp_path):
    """The competition's own training.txt: tab-separated, no header, 12 columns in the documented order."""
    head = pacsv.read_csv(kdd_csv).slice(0, 500)
    path = tmp_path / "training.txt"
    pacsv.write_csv(head, path, pacsv.WriteOptions(delimiter="\t", include_header=False))
    got = read_kdd_log(path)
    assert got.table.equals(read_kdd_log(kdd_csv, rows=500).table)
    lines = path.read_text().splitlines()
    cells = lines[41].split("\t")
    cells[3] = "x9"  # ad_id of data row 42, on line 42 (no header line)
    lines[41] = "\t".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"column `ad_id`, row 42 \(line 42\): 'x9'"):
        read_kdd_log(path)
    (tmp_path / "five.tsv").write_text("1\t2\t3\t4\t5\n")
    with pytest.raises(DataError, match="holds 5 numbers and no column names"):
        read_kdd_log(tmp_path / "five.tsv")
